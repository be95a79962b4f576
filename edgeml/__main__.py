"""`python -m edgeml ...` (what `torchrun -m edgeml train ...` runs)."""

import sys

from edgeml.cli import main

sys.exit(main())
