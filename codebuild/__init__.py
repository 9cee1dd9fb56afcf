"""Code that runs inside CodeBuild (stdlib only); the build fetches setup_mirror.py as an S3 asset."""
