"""`python3 -m ecr_mirror_cdk.setup`: the setup run by hand from a checkout or an installed package."""

import sys

from .cli import main

sys.exit(main())
