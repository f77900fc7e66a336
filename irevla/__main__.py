"""`python -m irevla` (and `accelerate launch -m irevla ...`) runs the CLI."""

import sys

from irevla.cli import main

sys.exit(main())
