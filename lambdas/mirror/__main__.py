"""`python -m lambdas.mirror plan|sync ...`: the mirror engine in one local process."""

import sys

from .cli import main

sys.exit(main())
