"""The planning policy: which tags to copy, what the pull quota allows, signatures, staleness, running the plan.

Imports `oci` (below it) and the library's config model; never `aws`, `handlers` or `cli`."""
