"""Benchmarks: not tests, never run in CI; each prints a table for people and can write JSON.

python -m chargen.bench [speed] --corpus FILE            throughput against the machine's ceiling
python -m chargen.bench quality --corpus FILE --budgets  validation loss per training-time budget
"""
