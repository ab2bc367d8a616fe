"""Run the target-side programs (`edgecomp/deploy/target/*.py`) here or on a device.

Both runners give the programs the same view: staged files under fixed, safe
names in the run's working folder, so a program gets the same command line
wherever it runs (the engine builder relies on it).
`HostRunner` runs them here with this Python (onnxruntime on the CPU; TensorRT
when installed), in a scratch folder of links to the staged files.
`SshRunner` copies them and the artifacts with the system `scp` into
`~/.cache/edgecomp/<run-id>/` on the device and runs them with the system
`ssh`: `BatchMode=yes` (never a password prompt), `ConnectTimeout=10`, host
keys checked (`StrictHostKeyChecking=yes`; `accept-new` only when asked),
the user's ~/.ssh/config honoured (no -F unless given in `ssh_options`),
every remote argument quoted with `shlex.quote`. Staged files get fixed,
safe names on the device, so local paths with spaces or quotes never reach
a remote shell. A server without the SFTP subsystem (scp's protocol since
OpenSSH 9) is detected and files then travel through the ssh channel itself
(`cat`), which any OpenSSH server allows.

Both return each program's JSON object and keep its stdout/stderr as
`<log_dir>/<name>.json` and `<name>.log`. Failures are one-line errors:
`DeviceError` (exit 2) when the connection is the user's to fix (refused,
unreachable, unknown host key, key not accepted, no python3 there),
`RemoteError` (exit 1) when a program fails or the connection drops.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

from ..core.errors import DeviceError, EdgecompError, RemoteError, UserInputError
from .devices import Device, SshTarget

TARGET_DIR = Path(__file__).parent / "target"
DEFAULT_REMOTE_ROOT = ".cache/edgecomp"  # relative to the remote home: no '~' to expand
REMOTE_PYTHON_ENV = "EDGECOMP_REMOTE_PYTHON"
SSH_OPTIONS_ENV = "EDGECOMP_SSH_OPTIONS"
REMOTE_DIR_ENV = "EDGECOMP_REMOTE_DIR"
_SAFE_NAME = re.compile(r"^[A-Za-z0-9._-]+$")
_SAFE_PATH = re.compile(r"^[A-Za-z0-9._/-]+$")


def target_programs() -> list[Path]:
    return sorted(p for p in TARGET_DIR.glob("*.py") if p.name != "__init__.py")


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _parse_json(stdout: str) -> Optional[dict[str, Any]]:
    try:
        data = json.loads(_last_line(stdout))
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


class Runner:
    """Where the target programs run. Use as a context manager: files are cleaned up on success."""

    label = "host"

    def stage(self, path: Path, name: str) -> str:
        """Make a local file available to the programs under `name`; returns the path they see."""
        raise NotImplementedError

    def output(self, name: str) -> str:
        """A path the programs may write (`name` in the run's folder on the device)."""
        raise NotImplementedError

    def fetch(self, remote: str, local: Path) -> None:
        raise NotImplementedError

    def run(self, program: str, args: Sequence[str], *, tag: Optional[str] = None,
            log_dir: Optional[Path] = None) -> dict[str, Any]:
        raise NotImplementedError

    def close(self, keep: bool = False) -> None:
        """Remove the run's files (kept when `keep`, e.g. after a failure, for a look)."""

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, kind, error, trace) -> None:
        # A failing program leaves its folder for a look; a refusal of the user's input has nothing to show.
        self.close(keep=error is not None and not isinstance(error, UserInputError))

    def _finish(self, program: str, done: subprocess.CompletedProcess, tag: Optional[str],
                log_dir: Optional[Path]) -> dict[str, Any]:
        if log_dir is not None:
            log_dir.mkdir(parents=True, exist_ok=True)
            (log_dir / f"{tag or program}.log").write_text(done.stderr)
            (log_dir / f"{tag or program}.json").write_text(done.stdout)
        data = _parse_json(done.stdout)
        if done.returncode == 0 and data is not None and "error" not in data:
            return data
        raise self._failure(program, done, data)

    def _failure(self, program: str, done: subprocess.CompletedProcess, data) -> EdgecompError:
        if data is not None and "error" in data:
            return RemoteError(f"{program}.py on {self.label} failed: {data['error']}")
        detail = _last_line(done.stderr) or f"exit code {done.returncode}, no JSON on stdout"
        return RemoteError(f"{program}.py on {self.label} failed: {detail}")


class HostRunner(Runner):
    """The programs run on this machine, with this interpreter (or `python`)."""

    def __init__(self, python: Optional[str] = None, label: str = "host", timeout: Optional[float] = None):
        self.python, self.label, self.timeout = python or sys.executable, label, timeout
        self._scratch = tempfile.TemporaryDirectory(prefix="edgecomp-host-")

    def stage(self, path: Path, name: str) -> str:
        if not _SAFE_NAME.match(name):
            raise ValueError(f"staged name {name!r} must be a safe file name")
        link = Path(self._scratch.name) / name
        link.unlink(missing_ok=True)
        link.symlink_to(Path(path).resolve())
        return name

    def output(self, name: str) -> str:
        return name

    def fetch(self, remote: str, local: Path) -> None:
        local.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(Path(self._scratch.name) / remote, local)

    def run(self, program, args, *, tag=None, log_dir=None):
        command = [self.python, str(TARGET_DIR / f"{program}.py"), *args]
        try:
            done = subprocess.run(command, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                                  timeout=self.timeout, cwd=self._scratch.name)
        except subprocess.TimeoutExpired:
            raise RemoteError(f"{program}.py on {self.label} ran past {self.timeout:.0f} s") from None
        return self._finish(program, done, tag, log_dir)

    def close(self, keep: bool = False) -> None:
        self._scratch.cleanup()


# ---------------------------------------------------------------- ssh

# scp (SFTP protocol, the default since OpenSSH 9) against an sshd without `Subsystem sftp`.
SFTP_MISSING = "subsystem request failed"

# ssh's own failures (exit code 255), by what its stderr says; first match wins.
SSH_FAILURES = [
    ("REMOTE HOST IDENTIFICATION HAS CHANGED", True,
     "the host key changed since it was recorded in known_hosts; check why before removing the old key"),
    ("Host key verification failed", True,
     "unknown or changed host key; check it and add it to known_hosts (connect once with ssh), "
     "or pass --accept-new-host-key to accept a first-seen key"),
    ("Connection refused", True, "connection refused (is sshd running there, is the port right?)"),
    ("Could not resolve hostname", True, "unknown host name"),
    ("Name or service not known", True, "unknown host name"),
    ("No route to host", True, "no route to host (unreachable)"),
    ("Network is unreachable", True, "network unreachable"),
    ("timed out", True, "connection timed out (unreachable host or wrong port?)"),
    ("Permission denied", True,
     "the key was not accepted (BatchMode: no password prompts); set up key login, e.g. ssh-copy-id"),
    ("Too many authentication failures", True, "too many authentication failures: use IdentitiesOnly"),
    (SFTP_MISSING, True, "the ssh server has no SFTP subsystem (scp needs it since OpenSSH 9); "
     "enable `Subsystem sftp` in its sshd_config"),
    ("not responding", False, "connection lost (the device stopped answering)"),
    ("Connection closed", False, "connection lost"),
    ("Connection reset", False, "connection lost"),
    ("Broken pipe", False, "connection lost"),
]


def ssh_failure(stderr: str, device: str) -> EdgecompError:
    """Map ssh's stderr (exit code 255) to a one-line error; the user's to fix → DeviceError."""
    for needle, users_to_fix, message in SSH_FAILURES:
        if needle.lower() in stderr.lower():
            error = DeviceError if users_to_fix else RemoteError
            prefix = f"--device {device}: " if users_to_fix else f"ssh to {device}: "
            return error(prefix + message)
    return RemoteError(f"ssh to {device} failed: {_last_line(stderr) or 'no message'}")


class SshRunner(Runner):
    """The programs run on a device reached with the system ssh/scp."""

    def __init__(
        self,
        target: SshTarget,
        *,
        label: Optional[str] = None,
        run_id: str = "run",
        accept_new_host_key: bool = False,
        ssh_options: Sequence[str] = (),
        remote_python: str = "python3",
        remote_root: str = DEFAULT_REMOTE_ROOT,
        connect_timeout: int = 10,
        timeout: Optional[float] = None,
    ):
        if not _SAFE_NAME.match(run_id):
            raise DeviceError(f"run id {run_id!r}: letters, digits, '.', '_' and '-' only")
        if not _SAFE_PATH.match(remote_root) or ".." in remote_root.split("/"):
            raise DeviceError(f"{REMOTE_DIR_ENV}={remote_root!r}: letters, digits, '.', '_', '-' and '/' only")
        self.target, self.label = target, label or target.label
        self.remote_dir = f"{remote_root.rstrip('/')}/{run_id}"
        self.python = shlex.split(remote_python) or ["python3"]
        self.timeout = timeout
        checking = "accept-new" if accept_new_host_key else "yes"
        self.options = [
            "-o", "BatchMode=yes", "-o", f"ConnectTimeout={connect_timeout}",
            "-o", f"StrictHostKeyChecking={checking}",
            "-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=4",  # notice a dropped link in ~1 min
            *ssh_options,  # after ours: ssh keeps the first value, so these cannot undo the checks above
        ]
        self._queued: list[tuple[Path, str]] = []
        self._staged: dict[str, Path] = {}
        self._ready = False
        self._legacy_scp = False  # set once the server turns out to have no SFTP subsystem

    # ---- command lines (pure: tested without a server)

    def ssh_command(self, remote: list[str]) -> list[str]:
        port = ["-p", str(self.target.port)] if self.target.port else []
        return ["ssh", *self.options, *port, "--", self.target.destination, shlex.join(remote)]

    def scp_command(self, sources: list[str], destination: str) -> list[str]:
        port = ["-P", str(self.target.port)] if self.target.port else []
        legacy = ["-O"] if self._legacy_scp else []  # the scp protocol itself: no SFTP subsystem needed
        return ["scp", *legacy, *self.options, *port, "--", *sources, destination]

    def remote_command(self, program: str, args: Sequence[str]) -> list[str]:
        """`cd DIR && python3 PROGRAM.py ARGS...` as words for `sh -c`, each quoted."""
        inner = shlex.join([*self.python, f"{program}.py", *args])
        return ["sh", "-c", f"cd {shlex.quote(self.remote_dir)} && exec {inner}"]

    # ---- operations

    def _call(self, command: list[str], what: str) -> subprocess.CompletedProcess:
        try:
            return subprocess.run(command, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                                  timeout=self.timeout)
        except FileNotFoundError:
            raise DeviceError(f"--device {self.label}: the `{command[0]}` program is not installed here "
                              "(apt-get install openssh-client)") from None
        except subprocess.TimeoutExpired:
            raise RemoteError(f"{what} on {self.label} ran past {self.timeout:.0f} s") from None

    def _check(self, done: subprocess.CompletedProcess) -> None:
        if done.returncode != 0:
            if done.returncode == 255 or "ssh:" in done.stderr or "scp:" in done.stderr:
                raise ssh_failure(done.stderr, self.label)
            raise RemoteError(f"ssh to {self.label} failed: {_last_line(done.stderr) or done.returncode}")

    def _prepare(self) -> None:
        if self._ready:
            return
        self._check(self._call(self.ssh_command(["mkdir", "-p", "--", self.remote_dir]), "mkdir"))
        self._ready = True
        self._queued = [(p, p.name) for p in target_programs()] + self._queued
        self._flush()

    def _flush(self) -> None:
        """Copy the queued files in one scp, under their safe names (through a folder of links)."""
        if not self._queued:
            return
        with tempfile.TemporaryDirectory(prefix="edgecomp-scp-") as folder:
            sources = []
            for path, name in self._queued:
                link = Path(folder) / name
                link.symlink_to(Path(path).resolve())
                sources.append(str(link))
            self._scp(sources, f"{self.target.scp_host}:{self.remote_dir}/")
        self._queued = []

    def _scp(self, sources: list[str], destination: str) -> None:
        """scp; against a server without the SFTP subsystem, again with the original scp protocol (-O)."""
        done = self._call(self.scp_command(sources, destination), "scp")
        if done.returncode != 0 and SFTP_MISSING in done.stderr and not self._legacy_scp:
            self._legacy_scp = True
            done = self._call(self.scp_command(sources, destination), "scp -O")
            if done.returncode != 0 and "unknown option" in done.stderr:
                raise DeviceError(f"--device {self.label}: the ssh server has no SFTP subsystem, which this scp "
                                  "needs, and this scp has no -O (the original protocol); enable "
                                  "`Subsystem sftp` in the server's sshd_config")
        self._check(done)

    def stage(self, path: Path, name: str) -> str:
        if not _SAFE_NAME.match(name):
            raise ValueError(f"staged name {name!r} must be a safe file name")
        if self._staged.get(name) != Path(path).resolve():  # each file travels once
            self._staged[name] = Path(path).resolve()
            self._queued = [(p, n) for p, n in self._queued if n != name] + [(Path(path), name)]
        return name

    def output(self, name: str) -> str:
        return name

    def fetch(self, remote: str, local: Path) -> None:
        self._prepare()
        local.parent.mkdir(parents=True, exist_ok=True)
        self._scp([f"{self.target.scp_host}:{self.remote_dir}/{remote}"], str(local))

    def run(self, program, args, *, tag=None, log_dir=None):
        self._prepare()
        self._flush()
        done = self._call(self.ssh_command(self.remote_command(program, args)), f"{program}.py")
        if done.returncode == 255:  # ssh itself failed: the program's result never came back
            raise ssh_failure(done.stderr, self.label)
        if done.returncode == 127 and _parse_json(done.stdout) is None:
            raise DeviceError(f"--device {self.label}: {shlex.join(self.python)} not found there "
                              f"(set {REMOTE_PYTHON_ENV} to its Python 3 with numpy)")
        return self._finish(program, done, tag, log_dir)

    def close(self, keep: bool = False) -> None:
        if self._ready and not keep:
            try:  # best effort: a failed clean-up must not hide the results
                self._call(self.ssh_command(["rm", "-rf", "--", self.remote_dir]), "clean-up")
            except EdgecompError:
                pass
        self._ready = False


# ---------------------------------------------------------------- choosing one


def make_runner(
    device: Device,
    *,
    accept_new_host_key: bool = False,
    ssh_options: Optional[Sequence[str]] = None,
    remote_python: Optional[str] = None,
    run_id: str = "run",
) -> Runner:
    """HostRunner for `host`, SshRunner for a device with a connection.

    Unset options come from the environment: EDGECOMP_SSH_OPTIONS (extra ssh
    options, shell-split, e.g. "-i key -o UserKnownHostsFile=file"),
    EDGECOMP_REMOTE_PYTHON (the device's interpreter, default python3),
    EDGECOMP_REMOTE_DIR (the folder of run folders, default .cache/edgecomp
    under the remote home).
    """
    if device.is_local:
        if device.profile is not None and device.profile.name != "host":
            raise DeviceError(f"--device {device.profile.name}: the profile has no connection; give "
                              "--device ssh://user@host[:port] or a profile file with connection: set")
        return HostRunner(label=device.label)
    assert device.connection is not None  # not local: is_local means no connection
    options = list(ssh_options) if ssh_options is not None else shlex.split(os.environ.get(SSH_OPTIONS_ENV, ""))
    return SshRunner(
        device.connection, label=device.label, run_id=run_id, accept_new_host_key=accept_new_host_key,
        ssh_options=options, remote_python=remote_python or os.environ.get(REMOTE_PYTHON_ENV) or "python3",
        remote_root=os.environ.get(REMOTE_DIR_ENV) or DEFAULT_REMOTE_ROOT,
    )
