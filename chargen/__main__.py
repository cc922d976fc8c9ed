"""Lets `python -m chargen` behave like the `chargen` command."""

from chargen.cli import main

main()
