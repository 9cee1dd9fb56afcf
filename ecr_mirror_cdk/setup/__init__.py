"""Make every pull of a build come from the ECR mirror, by registry configuration alone.

Runs at the start of a CodeBuild build (stdlib only, Python 3.9+), or by hand on any Docker host, from a
checkout or as the one-file archive builds fetch (ecr_mirror_cdk/setup_archive.py builds it at synth):

    python3 -m ecr_mirror_cdk.setup --registry 123456789012.dkr.ecr.eu-west-1.amazonaws.com
    python3 -m ecr_mirror_cdk.setup --report  # at the end: one line, what came through the mirror and what did not

It starts a small mirror endpoint on 127.0.0.1 in the background and points the Docker daemon
(`registry-mirrors` in daemon.json) and BuildKit builders (`buildkitd.toml`) at it. Nothing of the build
itself (Dockerfiles, compose files, commands) is read or changed. A run that fails leaves the host as it found
it, an endpoint an earlier run started still serving.

One module per job, imports running from cli down to base:
- cli: the command line, the setup (and putting back what was there on a failure), the remote-daemon case
- report: `--report`'s one line, from the endpoint's journal and dockerd's own record of pulls
- events: dockerd's pull events (GET /events) and which of them did not come through the mirror
- endpoint: the loopback endpoint (request handler, journal, serving) and its background process
- daemon: dockerd found through /proc, daemon.json, restart, live-restore, remote DOCKER_HOST
- buildkit: buildkitd.toml for buildx builders
- ecr: HTTP to the mirror's registry and ECR's login
- mirror_map: the map, repository names, routes
- base: the one error type, JSON and file helpers, loopback hosts, waiting for processes
"""
