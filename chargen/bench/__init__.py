"""Benchmarks: not tests, never run in CI; each prints a table for people and can write JSON.

python -m chargen.bench [speed] --corpus FILE            throughput against the machine's ceiling
python -m chargen.bench quality --corpus FILE --budgets  validation loss per training-time budget,
                                                         against a plain reference trained as long
python -m chargen.bench items --corpus names.txt   test loss on makemore's split of its names
python -m chargen.bench gpu                              the GPU check: tests, speed and CPU agreement
python -m chargen.bench adapt --model RUN --lr ...       dynamic evaluation's loss over a grid of settings
"""
