"""Benchmarks printed by `make bench`: copy speed against skopeo, peak RSS, re-sync cost."""
