"""Make every pull of a build come from the ECR mirror, by registry configuration alone.

The command line, and the setup itself: check the registries, start the endpoint, point BuildKit and dockerd at
it and restart dockerd, putting back what was there on any failure.

With a remote daemon (`DOCKER_HOST` naming a daemon that is not this host's: a CodeBuild project with a Docker
server, or any daemon elsewhere), nothing of the daemon is touched: only buildx builders are pointed at ECR's
prefixes.

Fail open: a host the setup cannot configure (no daemon yet, not root, a registry that refuses, a bad map...) gets
one line, `mirror: not set up: <why>`, exit status 0 and everything as it was, so the build runs as it would without
the mirror. `--strict` (or MIRROR_STRICT=true) makes it a failure instead: `setup_mirror: <why>`, exit status 1.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import NoReturn

from .base import SetupError, end, read_text, restore, write_atomically
from .buildkit import buildkit_config, default_buildkit_config, mirrorable
from .daemon import DOCKERD_LOG, Daemon, Process, daemon_config
from .ecr import Registry
from .endpoint import Journal, endpoint_pid, listen, serve, start_endpoint, state_files, wait_for_endpoint
from .locate import Remote, locate
from .mirror_map import DEFAULT_MAP, HOST, MirrorMap
from .report import SetupRecord, report


def setup(args: argparse.Namespace) -> str:
    mirror = MirrorMap.parse(args.map)
    for host in (args.registry, args.home_registry):
        if host:
            Registry(host).check()
    found = locate(os.environ.get("DOCKER_HOST", ""))
    if isinstance(found, Remote):
        return setup_remote(args, mirror, found.address)
    daemon = Daemon.of(Process.read(found.pid), args.daemon_config, args.dockerd_log)
    listener = listen(args.port)
    address = f"127.0.0.1:{listener.getsockname()[1]}"
    previous = endpoint_pid(args.endpoint_pidfile)
    since = time.time()  # before dockerd restarts: the report reads its record of pulls from here on
    pid = start_endpoint(args, listener, fresh=previous is None)
    try:
        line, daemon_pid = configure(args, mirror, daemon, address, pid)
    except BaseException:
        end(pid, 5)
        raise
    write_atomically(args.endpoint_pidfile, f"{pid}\n")
    state = state_files(args.endpoint_pidfile)
    # The dockerd the setup started, so that the report can tell a later restart.
    SetupRecord(since, address, daemon.api, daemon_pid, [r for r in (args.registry, args.home_registry) if r],
                args.map).write(state["setup"])
    for stale in ("remote", "not_set_up"):
        state[stale].unlink(missing_ok=True)
    if previous:  # replaced only now: a run that fails leaves the earlier endpoint serving
        end(previous, 5)
    return line


def configure(args: argparse.Namespace, mirror: MirrorMap, daemon: Daemon, address: str,
              endpoint: int) -> tuple[str, int]:
    """Point BuildKit and dockerd at the endpoint and restart dockerd; on any failure, put back what was there.
    The line to print, and the pid of the dockerd it started."""
    changed: list[tuple[Path, str | None]] = []
    running: int | None = daemon.pid
    reloaded = False
    try:
        wait_for_endpoint(address, endpoint, state_files(args.endpoint_pidfile)["log"])
        # A restart stops running containers unless live-restore is on in the daemon that stops and the one that
        # starts (moby daemon/daemon.go: Shutdown leaves them, restore shuts down what it finds alive otherwise).
        containers = daemon.running_containers()
        keep = daemon.info().get("LiveRestoreEnabled") is True
        refused = None if keep or not containers else daemon.live_restore_refusal()
        add_live_restore = bool(containers) and not keep and refused is None
        old_daemon, new_daemon = daemon_config(daemon.config_path, f"http://{address}", live_restore=add_live_restore)
        old_buildkit = read_text(args.buildkit_config)
        write_atomically(args.buildkit_config, buildkit_config(mirror, address, args.registry))
        changed.append((args.buildkit_config, old_buildkit))
        write_atomically(daemon.config_path, new_daemon)
        changed.append((daemon.config_path, old_daemon))
        if add_live_restore:
            reloaded = True
            keep = daemon.reload_live_restore()
            refused = None if keep else "dockerd did not take live-restore on a reload"
        # SIGHUP reloads registry-mirrors for pulls, but the daemon's built-in BuildKit (the default builder of
        # `docker build`) keeps the mirrors it started with (seen with dockerd 20.10): a restart applies both.
        daemon.stop(daemon.pid)
        running = None
        running = started = daemon.start()
        if f"http://{address}" not in daemon.mirrors():
            raise SetupError(f"dockerd restarted but does not list the mirror http://{address}")
        kept = daemon.running_containers()
    except BaseException as err:
        for path, text in reversed(changed):
            restore(path, text)
        put_back(daemon, running, reloaded, err)
        raise
    home = f", then {args.home_registry}" if args.home_registry else ""
    line = (f"mirror: dockerd (pid {started}) and BuildKit ({args.buildkit_config}) pull "
            f"{', '.join(mirror.upstreams())} through http://{address} (endpoint pid {endpoint}) from "
            f"{args.registry}{home}")
    if containers and keep:
        line += f"; {kept} of {containers} running containers kept running through the restart (live-restore)"
    elif containers:
        line += f"; restarting dockerd stopped {containers} running containers ({refused})"
    return line, started


def put_back(daemon: Daemon, running: int | None, reloaded: bool, cause: BaseException) -> None:
    """After a failure, with the files restored: the dockerd the setup found running as it was, nothing of ours."""
    try:
        if running == daemon.pid:
            if reloaded:  # never stopped: a reload takes back what the restored file sets
                os.kill(daemon.pid, signal.SIGHUP)
            return
        if running is not None:
            daemon.stop(running)
        daemon.start()
    except (SetupError, OSError) as err:
        raise SetupError(f"{cause}; and dockerd could not be put back as it was: {err}") from None


def setup_remote(args: argparse.Namespace, mirror: MirrorMap, docker_host: str) -> str:
    """A daemon elsewhere (a CodeBuild Docker server): left as it is; buildx builders pull from ECR's prefixes."""
    write_atomically(args.buildkit_config, buildkit_config(mirror, None, args.registry))
    covered = ", ".join(u for u in mirror.upstreams() if mirror.ecr_paths(u) and mirrorable(u)) or "no upstream"
    line = (f"mirror: the Docker daemon is remote ({docker_host}) and is left as it is: buildx builders (BuildKit "
            f"v0.12 or later, with the build's docker login to ECR) pull {covered} from {args.registry}'s cache "
            f"prefixes ({args.buildkit_config}); not covered: the remote daemon's own pulls (docker pull, docker run, "
            "docker build on its default builder), which go to the upstream")
    state = state_files(args.endpoint_pidfile)
    write_atomically(state["remote"], line + "\n")
    state["not_set_up"].unlink(missing_ok=True)
    return line


def not_set_up(args: argparse.Namespace, err: Exception) -> int:
    """Fail open: one line saying why, exit status 0, and a record for `--report`; with --strict, a failure."""
    reason = str(err) if isinstance(err, SetupError) else f"{type(err).__name__}: {err}"
    reason = " ".join(reason.split())  # one line, whatever the error held
    if args.strict:
        print(f"setup_mirror: {reason}", file=sys.stderr)
        return 1
    state = state_files(args.endpoint_pidfile)
    earlier = False
    with contextlib.suppress(OSError):  # a directory a run without root may not look into
        earlier = endpoint_pid(args.endpoint_pidfile) is not None or state["remote"].exists()
    if earlier:
        print(f"mirror: not set up: {reason}; what an earlier run of this build set up stays as it was")
        return 0
    line = f"mirror: not set up: {reason}; this build pulls from the upstream registries as it would without the mirror"
    with contextlib.suppress(OSError):  # a run without root may not write there; the line above still says it
        write_atomically(state["not_set_up"], line + "\n")
    print(line)
    return 0


class OneLineParser(argparse.ArgumentParser):
    """Bad arguments as one line on stderr, like every other error of the setup (no usage block)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"setup_mirror: {message}\n")


def port(text: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a TCP port (0 to 65535, 0 for any free one)")
    return int(text)


def arguments(argv: list[str] | None) -> argparse.Namespace:
    # `python3 -m` makes the package's __main__.py the program's name: name the command instead.
    prog = f"python3 -m {__package__}" if Path(sys.argv[0]).name == "__main__.py" else None
    parser = OneLineParser(prog=prog, description=__doc__.splitlines()[0])
    parser.add_argument("--registry", default=os.environ.get("MIRROR_REGISTRY") or None,
                        help="the mirror's registry, HOST[:PORT]; HTTP on loopback only (default: $MIRROR_REGISTRY)")
    parser.add_argument("--home-registry", default=os.environ.get("MIRROR_HOME_REGISTRY") or None,
                        help="in a replica region: the mirror's home registry, tried after --registry "
                             "(default: $MIRROR_HOME_REGISTRY)")
    parser.add_argument("--map", default=os.environ.get("MIRROR_MAP") or json.dumps(DEFAULT_MAP),
                        help="JSON: upstream -> cache prefix, source -> repository (default: $MIRROR_MAP)")
    parser.add_argument("--daemon-config", type=Path, default=None,
                        help="daemon.json (default: dockerd's --config-file, else /etc/docker/daemon.json)")
    parser.add_argument("--dockerd-log", type=Path, default=Path(os.environ.get("MIRROR_DOCKERD_LOG") or DOCKERD_LOG),
                        help="where a restarted dockerd writes when its own output was not a file "
                             f"(default: $MIRROR_DOCKERD_LOG, else {DOCKERD_LOG})")
    parser.add_argument("--endpoint-pidfile", type=Path,
                        default=Path(os.environ.get("MIRROR_ENDPOINT_PIDFILE", "/var/run/mirror-endpoint.pid")))
    parser.add_argument("--buildkit-config", type=Path, default=default_buildkit_config())
    parser.add_argument("--port", type=port, default=0, help="the endpoint's port on 127.0.0.1 (default: any free)")
    parser.add_argument("--strict", action="store_true", default=os.environ.get("MIRROR_STRICT") == "true",
                        help="fail (exit status 1) when the mirror cannot be set up, instead of one line and exit "
                             "status 0 (default: on if $MIRROR_STRICT is true)")
    parser.add_argument("--report", action="store_true", help="print what this build's pulls got, and exit")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--listen-fd", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.report:  # reads this build's journal only, whatever $MIRROR_REGISTRY holds
        return args
    if not args.registry:
        parser.error("--registry (or $MIRROR_REGISTRY) is required")
    for flag, host in (("--registry", args.registry), ("--home-registry", args.home_registry)):
        if host is not None and ("://" in host or "/" in host or not HOST.fullmatch(host)):
            parser.error(f"{flag} takes HOST[:PORT], got {host!r}")
    if args.home_registry == args.registry:  # the home region itself (the contract names it there too)
        args.home_registry = None
    return args


def main(argv: list[str] | None = None) -> int:
    args = arguments(argv)
    try:
        if args.report:
            print(report(args.endpoint_pidfile))
        elif args.serve:
            listener = socket.socket(fileno=args.listen_fd)
            journal = Journal(state_files(args.endpoint_pidfile)["journal"])
            home = Registry(args.home_registry) if args.home_registry else None
            serve(listener, Registry(args.registry), MirrorMap.parse(args.map), journal, home)
        else:
            try:
                print(setup(args), flush=True)
            except Exception as err:  # noqa: BLE001 - whatever stopped it, the build goes on without the mirror
                return not_set_up(args, err)
    except SetupError as err:
        print(f"setup_mirror: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0
