"""`make simulate`: a simulated day of CodeBuild builds against a rate-limited "Docker Hub" (see
tests/support/limiter.py), run direct, logged in and through the mirror; writes docs/simulation.md
and docs/simulation.png. Modules: fleet (the day, as data), world (the loopback servers), run (one
mode), report (table and chart)."""
