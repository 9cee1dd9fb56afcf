"""The AWS adapters: ECR login, Secrets Manager credentials, SQS, the SSM state, Powertools observability.

Used by `handlers` and `cli` only. Imports nothing here at package level, so the CLI stays free of boto3 and
Powertools until a command needs them."""
