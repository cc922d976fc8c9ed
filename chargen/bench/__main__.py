"""python -m chargen.bench [speed|quality] ...: the speed benchmark unless `quality` comes first."""

import sys

from chargen.bench import quality, speed
from chargen.errors import ChargenError

try:
    if len(sys.argv) > 1 and sys.argv[1] == "quality":
        quality.main(sys.argv[2:])
    else:
        speed.main(sys.argv[2:] if len(sys.argv) > 1 and sys.argv[1] == "speed" else sys.argv[1:])
except ChargenError as error:  # a bad corpus or folder: one line, as the CLI prints it
    sys.exit(f"error: {error}")
