"""The OCI distribution client and copy: registry HTTP, auth, manifests, blobs, referrers. No AWS, no policy."""
