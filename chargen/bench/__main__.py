"""python -m chargen.bench [speed|quality|items|adapt|serve|gpu] ...: the speed benchmark unless
another comes first."""

import sys

from chargen.allocator import keep_freed_memory
from chargen.errors import ChargenError

# As every chargen command does. The references trained and timed in this process get it too, so
# their figures are those of a plain script that kept its memory the same way.
keep_freed_memory()
try:
    if len(sys.argv) > 1 and sys.argv[1] == "quality":
        from chargen.bench import quality

        quality.main(sys.argv[2:])
    elif len(sys.argv) > 1 and sys.argv[1] == "items":
        from chargen.bench import items

        items.main(sys.argv[2:])
    elif len(sys.argv) > 1 and sys.argv[1] == "adapt":
        from chargen.bench import adapt

        adapt.main(sys.argv[2:])
    elif len(sys.argv) > 1 and sys.argv[1] == "serve":
        from chargen.bench import serve

        serve.main(sys.argv[2:])
    elif len(sys.argv) > 1 and sys.argv[1] == "gpu":
        from chargen.bench import gpu

        gpu.main(sys.argv[2:])
    else:
        from chargen.bench import speed

        speed.main(sys.argv[2:] if len(sys.argv) > 1 and sys.argv[1] == "speed" else sys.argv[1:])
except ChargenError as error:  # a bad corpus or folder: one line, as the CLI prints it
    sys.exit(f"error: {error}")
