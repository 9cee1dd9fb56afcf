"""`make test` on a fresh machine: it installs the Debian packages dpkg does not report installed (docker-ce standing in
for docker.io) when it may (root, or `sudo -n`), saying so in one line, and otherwise names them in one line;
`.ci/run` is `make test`. apt-get, dpkg-query, sudo and id are fakes on a PATH of their own: the real apt-get never
runs."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SEVEN = ["docker-registry", "skopeo", "podman", "shellcheck", "uidmap", "docker.io", "busybox-static"]


def makefile_packages() -> list[str]:
    tools = re.search(r"^TEST_TOOLS := (.*?)(?<!\\)\n", (ROOT / "Makefile").read_text(), re.MULTILINE | re.DOTALL)
    assert tools is not None
    return [pair.split("=")[1] for pair in tools.group(1).replace("\\\n", " ").split()]


@dataclass
class Machine:
    """A PATH with bash, make and coreutils but none of the test tools, and fakes that record what they are asked."""

    bin_dir: Path
    apt_calls: Path
    sudo_calls: Path

    def run(self, *command: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if k not in ("MAKELEVEL", "MAKEFLAGS", "MFLAGS")}
        return subprocess.run(list(command), cwd=ROOT, env={**env, "PATH": str(self.bin_dir)}, capture_output=True,
                              text=True, timeout=120, check=False)

    def apt_get(self) -> list[str]:
        return self.apt_calls.read_text().splitlines() if self.apt_calls.exists() else []

    def sudo(self) -> list[str]:
        return self.sudo_calls.read_text().splitlines() if self.sudo_calls.exists() else []


def fake_machine(tmp_path: Path, *, uid: int, sudo: str | None, installed: tuple[str, ...] = ()) -> Machine:
    """`uid` is what `id -u` says; `sudo` is None (no sudo at all), "works" (`sudo -n` runs the command) or
    "password" (`sudo -n` refuses, as when a password is needed); dpkg-query reports `installed` as installed."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "make", "dirname", "env", "cat", "grep", "mktemp", "tail", "rm", "true"):
        (bin_dir / tool).symlink_to(shutil.which(tool) or tool)
    machine = Machine(bin_dir, tmp_path / "apt-get.calls", tmp_path / "sudo.calls")
    fakes = {
        "apt-get": f'echo "$*" >> {machine.apt_calls}\n',
        "id": f'[ "$1" = -u ] && echo {uid}\n',
        "dpkg-query": (f'for pkg in {" ".join(installed)}; do [ "$pkg" = "${{@: -1}}" ] && '
                       '{ printf "install ok installed"; exit 0; }; done\necho "no packages found" >&2; exit 1\n'),
    }
    if sudo == "works":
        fakes["sudo"] = f'echo "$*" >> {machine.sudo_calls}\n[ "$1" = -n ] && shift\nexec "$@"\n'
    elif sudo == "password":
        fakes["sudo"] = f'echo "$*" >> {machine.sudo_calls}\necho "sudo: a password is required" >&2\nexit 1\n'
    for name, body in fakes.items():
        (bin_dir / name).write_text(f"#!/bin/bash\n{body}")
        (bin_dir / name).chmod(0o755)
    return machine


def own_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if not line.startswith("make: ***")]


NAMED = f"error: make test needs these Debian packages: {' '.join(SEVEN)} (sudo apt-get install {' '.join(SEVEN)})"


def test_the_makefile_keeps_the_one_list_of_the_seven_packages() -> None:
    assert makefile_packages() == SEVEN


def test_ci_run_as_root_installs_all_seven_packages_dpkg_does_not_report_installed(tmp_path: Path) -> None:
    # Given root on a machine where dpkg reports none of the packages installed (sudo present but not needed)
    machine = fake_machine(tmp_path, uid=0, sudo="works")

    # When CI runs
    done = machine.run("bash", str(ROOT / ".ci/run"))

    # Then apt-get is asked to update, then to install all seven, with one line saying so and without sudo;
    # the fake installed nothing, so make test then names them and stops
    assert machine.apt_get() == ["update -qq", f"install -y -qq {' '.join(SEVEN)}"]
    assert machine.sudo() == []
    assert done.returncode != 0
    assert own_lines(done.stderr) == [f"make test: installing Debian packages: {' '.join(SEVEN)} (apt-get install -y)",
                                      NAMED]


def test_as_root_only_the_packages_dpkg_does_not_report_installed_are_installed(tmp_path: Path) -> None:
    machine = fake_machine(tmp_path, uid=0, sudo=None, installed=tuple(SEVEN[:5]))

    machine.run("make", "-s", "test-tools")

    assert machine.apt_get() == ["update -qq", "install -y -qq docker.io busybox-static"]


def test_docker_ce_stands_in_for_docker_io_and_is_never_replaced(tmp_path: Path) -> None:
    # Given root on a machine where dpkg reports docker.io not installed but Docker CE's docker-ce installed
    machine = fake_machine(tmp_path, uid=0, sudo=None, installed=(*SEVEN[:5], "docker-ce"))

    # When make test-tools runs
    machine.run("make", "-s", "test-tools")

    # Then apt-get is not asked for docker.io (it conflicts with docker-ce), only for the one package still missing
    assert machine.apt_get() == ["update -qq", "install -y -qq busybox-static"]


def test_a_user_without_sudo_gets_one_line_naming_the_packages_and_nothing_is_installed(tmp_path: Path) -> None:
    machine = fake_machine(tmp_path, uid=1000, sudo=None)

    done = machine.run("make", "test")

    assert machine.apt_get() == []
    assert done.returncode != 0
    assert own_lines(done.stderr) == [NAMED]


def test_a_user_whose_sudo_needs_a_password_is_never_prompted_and_gets_the_one_line(tmp_path: Path) -> None:
    machine = fake_machine(tmp_path, uid=1000, sudo="password")

    done = machine.run("make", "test")

    assert machine.sudo() == ["-n true"]
    assert machine.apt_get() == []
    assert own_lines(done.stderr) == [NAMED]


def test_a_user_with_sudo_n_installs_them_through_sudo(tmp_path: Path) -> None:
    machine = fake_machine(tmp_path, uid=1000, sudo="works")

    done = machine.run("make", "test")

    assert machine.sudo() == ["-n true", "-n env DEBIAN_FRONTEND=noninteractive apt-get update -qq",
                              f"-n env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq {' '.join(SEVEN)}"]
    assert machine.apt_get() == ["update -qq", f"install -y -qq {' '.join(SEVEN)}"]
    assert own_lines(done.stderr)[0] == f"make test: installing Debian packages: {' '.join(SEVEN)} (apt-get install -y)"


def test_a_failed_install_stops_make_test_with_apt_gets_last_lines_and_one_error(tmp_path: Path) -> None:
    machine = fake_machine(tmp_path, uid=0, sudo=None)
    (machine.bin_dir / "apt-get").write_text('#!/bin/bash\n[ "$1" = update ] && exit 0\n'
                                             'echo "E: Unable to locate package skopeo" >&2; exit 100\n')

    done = machine.run("make", "test")

    assert done.returncode != 0
    assert own_lines(done.stderr)[1:] == ["E: Unable to locate package skopeo",
                                          f"error: apt-get install -y {' '.join(SEVEN)} failed (its last lines above)"]
