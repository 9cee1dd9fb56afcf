"""Which daemon DOCKER_HOST leads to (ecr_mirror_cdk/setup/locate.py), on a small fake /proc: the listening socket
as /proc/net shows it, held open by a dockerd process (/proc/PID/fd). A real /proc, with real daemons, is in
test_setup_fail_open.py and test_setup_host.py."""

from __future__ import annotations

import ipaddress
import struct
import sys
from pathlib import Path

import pytest

from ecr_mirror_cdk.setup.base import SetupError
from ecr_mirror_cdk.setup.daemon import Daemon, Process
from ecr_mirror_cdk.setup.locate import Local, Remote, locate, proc_address

UNIX_HEADER = "Num       RefCount Protocol Flags    Type St Inode Path\n"
TCP_HEADER = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"


class FakeProc:
    """The few /proc files the setup reads, written as the kernel writes them (proc(5))."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "net").mkdir(parents=True)
        (root / "net" / "unix").write_text(UNIX_HEADER)
        for name in ("tcp", "tcp6"):
            (root / "net" / name).write_text(TCP_HEADER)

    def unix(self, path: str, inode: int, *, listening: bool = True) -> None:
        flags = "00010000" if listening else "00000000"  # __SO_ACCEPTCON
        with (self.root / "net" / "unix").open("a") as out:
            out.write(f"0000000000000000: 00000002 00000000 {flags} 0001 01 {inode} {path}\n")

    def tcp(self, address: str, port: int, inode: int) -> None:
        ip = ipaddress.ip_address(address)
        words = struct.unpack(f"={len(ip.packed) // 4}I", ip.packed)  # native 32-bit words, as the kernel prints
        name = "tcp" if ip.version == 4 else "tcp6"
        with (self.root / "net" / name).open("a") as out:
            out.write(f"   0: {''.join(f'{w:08X}' for w in words)}:{port:04X} {'0' * len(words) * 8}:0000 0A "
                      f"00000000:00000000 00:00000000 00000000     0        0 {inode} 1 0000000000000000 100 0 0 10 0"
                      "\n")

    def process(self, pid: int, argv: list[str], sockets: list[int]) -> None:
        where = self.root / str(pid)
        (where / "fd").mkdir(parents=True)
        (where / "cmdline").write_bytes(b"".join(arg.encode() + b"\0" for arg in argv))
        (where / "environ").write_bytes(b"PATH=/usr/bin\0")
        (where / "cwd").symlink_to("/")
        for fd, inode in enumerate(sockets, start=3):
            (where / "fd" / str(fd)).symlink_to(f"socket:[{inode}]")


@pytest.fixture
def proc(tmp_path: Path) -> FakeProc:
    fake = FakeProc(tmp_path / "proc")
    fake.process(1, ["/sbin/init"], [])
    fake.process(7, ["/usr/sbin/sshd", "-D"], [901])
    return fake


def test_the_dockerd_holding_the_default_socket_is_found_whatever_its_pidfile(proc):
    proc.unix("/var/run/docker.sock", 900)
    proc.process(42, ["/usr/local/bin/dockerd", "--pidfile", "/elsewhere/docker.pid", "--host=unix:///var/run/docker.sock",
                      "--host=tcp://127.0.0.1:2375"], [899, 900])
    assert locate("", proc.root) == Local(42)


def test_a_socket_path_through_a_symlink_is_the_same_socket(proc, tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "docker.sock").touch()
    (tmp_path / "var-run").symlink_to(tmp_path / "run")
    proc.unix(str(tmp_path / "run" / "docker.sock"), 900)
    proc.process(42, ["dockerd"], [900])
    assert locate(f"unix://{tmp_path}/var-run/docker.sock", proc.root) == Local(42)


def test_a_dockerd_run_by_systemd_on_its_socket_is_found_and_refused_in_one_line(proc):
    # systemd holds the socket and hands it to dockerd (-H fd://): both have it open
    proc.unix("/run/docker.sock", 900)
    proc.process(2, ["/lib/systemd/systemd", "--system"], [900])
    proc.process(612, ["/usr/bin/dockerd", "-H", "fd://", "--containerd=/run/containerd/containerd.sock"], [900])

    found = locate("unix:///run/docker.sock", proc.root)

    assert found == Local(612)
    with pytest.raises(SetupError, match=r"^dockerd was started by systemd with -H fd://: the setup cannot restart it "
                                         r"with its sockets; set registry-mirrors in its daemon.json and `systemctl "
                                         r"restart docker` instead$"):
        Daemon.of(Process.read(612, proc.root))


@pytest.mark.parametrize("listening", [False, None])
def test_no_daemon_yet_is_one_line_saying_where_a_custom_image_runs_the_setup(proc, listening):
    if listening is not None:  # a socket file left behind, nothing listening on it
        proc.unix("/var/run/docker.sock", 900, listening=False)
    with pytest.raises(SetupError, match=r"^no Docker daemon listens on unix:///var/run/docker.sock \(a custom build "
                                         r"image starts dockerd in its buildspec: run the setup line after that "
                                         r"command\)$"):
        locate("", proc.root)


def test_a_socket_no_dockerd_of_this_host_holds_is_a_remote_daemon(proc):
    proc.unix("/var/run/docker.sock", 901)  # held by sshd: a socket forwarded from another host
    proc.process(42, ["/usr/bin/dockerd"], [900])
    assert locate("unix:///var/run/docker.sock", proc.root) == Remote("unix:///var/run/docker.sock")


@pytest.mark.parametrize("bound", ["127.0.0.1", "::"])
def test_tcp_localhost_is_this_hosts_dockerd_listening_on_loopback_or_every_address(proc, bound):
    proc.tcp(bound, 2375, 900)
    proc.tcp("127.0.0.1", 2376, 901)
    proc.process(42, ["/usr/bin/dockerd", "-H", "unix:///var/run/docker.sock", "-H", f"tcp://{bound}:2375"], [900])
    assert locate("tcp://localhost:2375", proc.root) == Local(42)
    if bound == "::":  # every address, IPv6 loopback too
        assert locate("tcp://[::1]:2375/", proc.root) == Local(42)
    else:
        with pytest.raises(SetupError, match=r"^no Docker daemon listens on tcp://\[::1\]:2375$"):
            locate("tcp://[::1]:2375/", proc.root)


def test_a_tcp_port_on_this_host_that_nothing_listens_on_is_one_line(proc):
    with pytest.raises(SetupError, match=r"^no Docker daemon listens on tcp://127.0.0.1:2375$"):
        locate("tcp://127.0.0.1:2375", proc.root)


def test_an_address_that_is_not_this_hosts_is_a_remote_daemon_without_reading_proc(tmp_path):
    # 192.0.2.0/24 is TEST-NET-1 (RFC 5737): no host has it
    assert locate("tcp://192.0.2.10:2376", tmp_path / "no-proc") == Remote("tcp://192.0.2.10:2376")
    assert locate("ssh://builder@docker.example.com", tmp_path / "no-proc") == Remote("ssh://docker.example.com")


@pytest.mark.skipif(sys.byteorder != "little", reason="the sample is from a little-endian host")
def test_addresses_read_as_the_kernel_prints_them():
    assert proc_address("0100007F") == ipaddress.ip_address("127.0.0.1")  # from this machine's /proc/net/tcp
    assert proc_address("00000000000000000000000001000000") == ipaddress.ip_address("::1")
