"""Code that runs inside CodeBuild (stdlib only); the build fetches redirect.py as an S3 asset."""
