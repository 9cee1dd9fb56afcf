"""`python -m stacks.verify` (the Makefile's `make verify`)."""

import sys

from .cli import main

sys.exit(main())
