"""The mirror engine, in layers whose imports run one way (tests/unit/test_engine_imports.py):

- `oci/`: the OCI distribution client and copy (registry HTTP, auth, manifests, blobs, referrers); no AWS.
- `planning/`: the policy: tasks, the pull-quota budget, the plan, signature checks, staleness, running tasks.
- `aws/`: the adapters: ECR login and Secrets Manager credentials, SQS, the SSM state, Powertools observability.
- `handlers/` (the Lambda entry points and their jobs) and `cli/` (`python -m lambdas.mirror`) on top.

`settings.py` holds the names the stack and the Lambdas share; every layer may read it.
"""
