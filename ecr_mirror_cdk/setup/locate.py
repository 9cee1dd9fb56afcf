"""Which Docker daemon the build's client talks to: the dockerd process of this host that listens where
DOCKER_HOST (else the default socket) points, a daemon that is not this host's own, or none at all.

Found by what the kernel shows, not by names or pidfiles: the listening socket's inode (/proc/net/unix,
/proc/net/tcp and tcp6) held open by a dockerd process (/proc/PID/fd links read `socket:[INODE]`; proc(5)).
So a pidfile anywhere, `localhost` for `127.0.0.1`, a symlinked /var/run and a socket systemd handed over
(`-H fd://`) all lead to the same process; a socket no dockerd here holds (one mounted from another host,
a forwarder) is a daemon elsewhere, as a TCP DOCKER_HOST on another machine is.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import socket
import struct
from dataclasses import dataclass
from pathlib import Path

from .base import SetupError

DEFAULT_SOCKET = "unix:///var/run/docker.sock"  # the Docker client's default (docker/cli, opts/hosts.go)
_ACCEPTING = 0x10000  # __SO_ACCEPTCON in /proc/net/unix "Flags": a listening socket (linux net/unix/af_unix.c)
_LISTEN = "0A"  # TCP_LISTEN in /proc/net/tcp "st" (linux include/net/tcp_states.h)
_NEEDS_ROOT = ("the setup runs as uid {uid}, not root: finding this host's dockerd and restarting it need root "
               "(a buildspec with `run-as` a non-root user? run the setup line before run-as takes effect, or as root)")


@dataclass(frozen=True)
class Local:
    """This host's dockerd, which the setup may restart."""

    pid: int


@dataclass(frozen=True)
class Remote:
    """A daemon that is not this host's dockerd: left as it is."""

    address: str  # as the log may show it (no user part)


def locate(docker_host: str, proc: Path = Path("/proc")) -> Local | Remote:
    """Where DOCKER_HOST (or the default socket) leads; SetupError if nothing listens there, or if this host's
    dockerd cannot be told apart without root."""
    address = (docker_host or DEFAULT_SOCKET).rstrip("/")
    scheme, _, where = address.partition("://")
    printable = re.sub(r"//[^@/]*@", "//", address)
    if scheme == "unix":
        inodes = unix_listeners(where, proc)
        if not inodes:
            raise SetupError(f"no Docker daemon listens on {printable} (a custom build image starts dockerd in its "
                             "buildspec: run the setup line after that command)")
    elif scheme == "tcp":
        host, _, port = where.rpartition(":")
        if not port.isdigit():
            raise SetupError(f"DOCKER_HOST={printable}: no port")
        local = local_addresses(host.strip("[]"), int(port))
        if not local:
            return Remote(printable)
        inodes = tcp_listeners(local, int(port), proc)
        if not inodes:
            raise SetupError(f"no Docker daemon listens on {printable}")
    else:  # ssh://, or anything else the client reaches through another program
        return Remote(printable)
    pid = owner(inodes, proc)
    if pid is None and os.geteuid() != 0:  # without root, another user's /proc/PID/fd cannot be read
        raise SetupError(_NEEDS_ROOT.format(uid=os.geteuid()))
    return Remote(printable) if pid is None else Local(pid)


def unix_listeners(path: str, proc: Path) -> set[int]:
    """Inodes of the listening unix sockets bound at `path` (the same file, through symlinks too)."""
    found = set()
    for line in read_lines(proc / "net" / "unix")[1:]:
        fields = line.split()
        if len(fields) < 8 or not int(fields[3], 16) & _ACCEPTING:
            continue
        bound = fields[7]
        if bound == path or same_file(bound, path):
            found.add(int(fields[6]))
    return found


def same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def local_addresses(host: str, port: int) -> set[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """The addresses `host` resolves to that belong to this host: loopback, or ones a socket can bind."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as err:
        raise SetupError(f"DOCKER_HOST names {host}, which does not resolve: {err}") from None
    local = set()
    for family, _, _, _, sockaddr in infos:
        address = ipaddress.ip_address(str(sockaddr[0]).split("%")[0])
        if address.is_loopback or bindable(family, str(sockaddr[0])):
            local.add(address)
    return local


def bindable(family: int, address: str) -> bool:
    """Whether `address` is one of this host's own (bind fails with EADDRNOTAVAIL for any other)."""
    with contextlib.suppress(OSError), socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.bind((address, 0))
        return True
    return False


def tcp_listeners(addresses: set[ipaddress.IPv4Address | ipaddress.IPv6Address], port: int,
                  proc: Path) -> set[int]:
    """Inodes of the TCP sockets listening on `port` at one of `addresses`, or on every address."""
    found = set()
    for name in ("tcp", "tcp6"):
        for line in read_lines(proc / "net" / name)[1:]:
            fields = line.split()
            if len(fields) < 10 or fields[3] != _LISTEN:
                continue
            hex_address, _, hex_port = fields[1].partition(":")
            if int(hex_port, 16) != port:
                continue
            address = proc_address(hex_address)
            mapped = getattr(address, "ipv4_mapped", None)
            if address.is_unspecified or address in addresses or (mapped is not None and mapped in addresses):
                found.add(int(fields[9]))
    return found


def proc_address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """An address as /proc/net/tcp{,6} prints it: 32-bit words in the host's byte order, in hex."""
    words = [int(text[i:i + 8], 16) for i in range(0, len(text), 8)]
    return ipaddress.ip_address(struct.pack(f"={len(words)}I", *words))


def dockerd_processes(proc: Path) -> list[int]:
    """Every process whose program is dockerd (argv[0]; /proc/PID/cmdline is readable by every user)."""
    found = []
    for entry in proc.iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                program = (entry / "cmdline").read_bytes().split(b"\0", 1)[0]
                if os.path.basename(program) == b"dockerd":
                    found.append(int(entry.name))
    return sorted(found)


def owner(inodes: set[int], proc: Path) -> int | None:
    """The dockerd process that holds one of the sockets `inodes` open, if any; SetupError if it takes root to
    look (/proc/PID/fd of another user's process)."""
    wanted = {f"socket:[{inode}]" for inode in inodes}
    for pid in dockerd_processes(proc):
        try:
            fds = list((proc / str(pid) / "fd").iterdir())
        except PermissionError:
            raise SetupError(_NEEDS_ROOT.format(uid=os.geteuid())) from None
        except OSError:
            continue  # ended meanwhile
        for fd in fds:
            with contextlib.suppress(OSError):
                if os.readlink(fd) in wanted:
                    return pid
    return None


def read_lines(path: Path) -> list[str]:
    try:
        return path.read_text().splitlines()
    except OSError:
        return []
