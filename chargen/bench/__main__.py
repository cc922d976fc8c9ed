"""python -m chargen.bench [BENCHMARK] [OPTIONS]: the benchmark named first, or the speed benchmark
when no name comes first; --help lists them."""

import argparse
import importlib
import shutil
import sys
import textwrap

from chargen.allocator import keep_freed_memory
from chargen.bench import BENCHMARKS
from chargen.errors import ChargenError


def overview() -> argparse.ArgumentParser:
    """The parser whose help lists the benchmarks; it parses only a first word that names none."""
    width = min(100, shutil.get_terminal_size().columns) - 2
    listed = "\n".join(
        textwrap.fill(
            what, width, initial_indent=f"  {name:<9}", subsequent_indent=" " * 11, break_on_hyphens=False
        )
        for name, what in BENCHMARKS.items()
    )
    about = (
        "chargen's benchmarks. Each prints its figures for people, the machine it ran on first, and "
        "can also write them as JSON (--json FILE); not tests, they take minutes."
    )
    parser = argparse.ArgumentParser(
        prog="python -m chargen.bench",
        usage="%(prog)s [BENCHMARK] [OPTIONS]",
        description=textwrap.fill(about, width),
        epilog=f"benchmarks:\n{listed}\n\n"
        "python -m chargen.bench BENCHMARK --help shows one's options and an example, e.g.\n"
        "  python -m chargen.bench speed --threads 1 --json speed.json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "benchmark", metavar="BENCHMARK", choices=BENCHMARKS, help="one of those below; default: speed"
    )
    return parser


args = sys.argv[1:]
if not args or (args[0].startswith("-") and args[0] not in ("-h", "--help")):
    args = ["speed", *args]  # options alone are the speed benchmark's
if args[0] not in BENCHMARKS:
    overview().parse_args(args[:1])  # --help, or an unknown name: argparse says so and exits
# As every chargen command does. The references trained and timed in this process get it too, so
# their figures are those of a plain script that kept its memory the same way.
keep_freed_memory()
try:
    importlib.import_module(f"chargen.bench.{args[0]}").main(args[1:])
except ChargenError as error:  # a bad corpus or folder: one line, as the CLI prints it
    sys.exit(f"error: {error}")
