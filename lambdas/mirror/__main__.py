"""`python -m lambdas.mirror plan|sync ...`: the mirror engine in one local process."""

import os
import sys

from .cli.main import main

# The CDK CLI and the Lambda runtime name the region in AWS_REGION; boto3 reads AWS_DEFAULT_REGION.
if os.environ.get("AWS_REGION") and not os.environ.get("AWS_DEFAULT_REGION"):
    os.environ["AWS_DEFAULT_REGION"] = os.environ["AWS_REGION"]
sys.exit(main())
