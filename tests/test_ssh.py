"""The SshRunner against a real OpenSSH server on 127.0.0.1.

A session fixture starts `/usr/sbin/sshd -D` on a free port with throwaway host
and user keys, as the current user. The "device" is this machine: its Python is
the venv's (EDGECOMP_REMOTE_PYTHON), so the onnxruntime backend runs there.
Nothing touches the real ~/.ssh: every ssh call gets `-F /dev/null`, the test
key, and a known_hosts file of the test's own (EDGECOMP_SSH_OPTIONS).
"""

from __future__ import annotations

import getpass
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from bench_helpers import assert_one_line_error, broken_onnx, cli, export_onnx, key_tree

from edgecomp.deploy.bench import BENCH_FORMAT
from edgecomp.deploy.devices import parse_ssh_url

# `bench --model DIR/model.onnx` writes beside the file, never a run's bench.json
BENCH_FILE, PARTIAL_FILE = "model.bench.json", "model.bench.partial.json"
from edgecomp.deploy.runners import SshRunner

pytestmark = pytest.mark.ssh  # a real sshd on 127.0.0.1

SSHD = Path("/usr/sbin/sshd")
FAST = ("--iterations", "10", "--warmup", "2")


def ensure_openssh() -> None:
    """Install openssh-server/-client with apt when missing and we are root; otherwise skip."""
    if SSHD.exists() and all(shutil.which(tool) for tool in ("ssh", "scp", "ssh-keygen")):
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("openssh-server is not installed and we cannot apt-get install it (not root): "
                    "apt-get install openssh-server openssh-client")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "openssh-server", "openssh-client"]
    if subprocess.run(install, env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True)
        subprocess.run(install, env=env, capture_output=True)
    if not SSHD.exists():
        pytest.skip("apt-get could not install openssh-server")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "edgecomp-test", "-f", str(path)],
                   check=True, capture_output=True)


@dataclass
class Server:
    user: str
    port: int
    root: Path
    known_hosts: Path
    remote_dir: Path

    @property
    def url(self) -> str:
        return f"ssh://{self.user}@127.0.0.1:{self.port}"

    @property
    def label(self) -> str:
        return f"{self.user}@127.0.0.1:{self.port}"

    def options(self, known_hosts: Path | None = None) -> list[str]:
        return ["-F", "/dev/null", "-i", str(self.root / "user_key"), "-o", "IdentitiesOnly=yes",
                "-o", f"UserKnownHostsFile={known_hosts or self.known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null"]

    def env(self, known_hosts: Path | None = None, **extra: str) -> dict[str, str]:
        return {"EDGECOMP_SSH_OPTIONS": shlex.join(self.options(known_hosts)),
                "EDGECOMP_REMOTE_PYTHON": sys.executable, "EDGECOMP_REMOTE_DIR": str(self.remote_dir), **extra}


SSHD_CONFIG = """Port {port}
ListenAddress 127.0.0.1
HostKey {root}/host_key
PidFile {root}/sshd.pid
AuthorizedKeysFile {root}/authorized_keys
PermitRootLogin prohibit-password
StrictModes no
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
{subsystem}
LogLevel ERROR
"""


@pytest.fixture(scope="session")
def sshd(tmp_path_factory):
    yield from serve(tmp_path_factory, "Subsystem sftp internal-sftp")


@pytest.fixture(scope="session")
def sshd_without_sftp(tmp_path_factory):
    """An OpenSSH server without the SFTP subsystem: scp's default protocol (OpenSSH 9+) fails there."""
    yield from serve(tmp_path_factory, "")


def serve(tmp_path_factory, subsystem: str):
    ensure_openssh()
    root = tmp_path_factory.mktemp("sshd")
    keygen(root / "host_key")
    keygen(root / "user_key")
    shutil.copy(root / "user_key.pub", root / "authorized_keys")
    if os.geteuid() == 0:  # sshd started as root wants its privilege-separation folder
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    port = free_port()
    config = root / "sshd_config"
    config.write_text(SSHD_CONFIG.format(port=port, root=root, subsystem=subsystem))
    check = subprocess.run([str(SSHD), "-t", "-f", str(config)], capture_output=True, text=True)
    if check.returncode != 0:
        pytest.fail(f"sshd rejects the test configuration: {check.stderr.strip()}")
    log = open(root / "sshd.log", "w")
    process = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT)
    _wait_for_port(port, process, root)
    known_hosts = root / "known_hosts"
    host_key = (root / "host_key.pub").read_text().split()
    known_hosts.write_text(f"[127.0.0.1]:{port} {host_key[0]} {host_key[1]}\n")
    remote_dir = root / "remote"
    remote_dir.mkdir()
    yield Server(getpass.getuser(), port, root, known_hosts, remote_dir)
    process.terminate()
    process.wait(timeout=10)
    log.close()


def _wait_for_port(port: int, process: subprocess.Popen, root: Path) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"sshd exited: {(root / 'sshd.log').read_text()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    pytest.fail("sshd did not start listening within 15 s")


def quoted_model_dir(tmp_path: Path) -> Path:
    folder = tmp_path / 'my model\'s "quoted" dir'
    folder.mkdir()
    return folder


def test_bench_over_ssh_end_to_end(sshd, tmp_path):
    """Host and ssh runners produce the same form of result; a path with spaces and quotes works."""
    model = export_onnx(quoted_model_dir(tmp_path) / "model.onnx")
    host = cli("bench", "--model", str(model), "--device", "host", *FAST)
    assert host.returncode == 0, host.stderr
    remote = cli("bench", "--model", str(model), "--device", sshd.url, *FAST, env=sshd.env())
    assert remote.returncode == 0, remote.stderr
    assert sshd.label in remote.stdout
    document = json.loads((model.parent / BENCH_FILE).read_text())
    assert document["format"] == BENCH_FORMAT and document["complete"] is True
    assert set(document["entries"]) == {"host/fp32", f"{sshd.label}/fp32"}
    local, over_ssh = document["entries"]["host/fp32"], document["entries"][f"{sshd.label}/fp32"]
    assert key_tree(over_ssh) == key_tree(local)  # the same JSON keys, nested ones included
    assert over_ssh["connection"] == sshd.url and over_ssh["profile"] is None
    assert over_ssh["backend"] == "onnxruntime" and over_ssh["latency_ms"]["p50"] > 0
    assert over_ssh["steps_done"] == ["info", "bench"]
    logs = model.parent / "bench-logs" / "model" / sshd.label.replace("@", "_").replace(":", "_")
    assert json.loads((logs / "bench.json").read_text())["program"] == "bench"  # fetched back
    assert (logs / "info.log").is_file()
    assert list(sshd.remote_dir.iterdir()) == []  # the device-side run folder was cleaned up
    assert not (model.parent / PARTIAL_FILE).exists()


def test_wrong_port_exits_2_in_one_line(sshd, tmp_path):
    model = export_onnx(tmp_path / "model.onnx")
    result = cli("bench", "--model", str(model), "--device", f"ssh://{sshd.user}@127.0.0.1:{free_port()}",
                 *FAST, env=sshd.env())
    assert_one_line_error(result, 2, "device error: --device", "connection refused")
    assert not (tmp_path / BENCH_FILE).exists() and not (tmp_path / PARTIAL_FILE).exists()


def test_unknown_host_key_needs_the_flag(sshd, tmp_path):
    model = export_onnx(tmp_path / "model.onnx")
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    refused = cli("bench", "--model", str(model), "--device", sshd.url, *FAST, env=sshd.env(known_hosts=empty))
    assert_one_line_error(refused, 2, "unknown or changed host key", "--accept-new-host-key")
    assert empty.read_text() == "" and not (tmp_path / BENCH_FILE).exists()
    accepted = cli("bench", "--model", str(model), "--device", sshd.url, "--accept-new-host-key", *FAST,
                   env=sshd.env(known_hosts=empty))
    assert accepted.returncode == 0, accepted.stderr
    assert f"[127.0.0.1]:{sshd.port}" in empty.read_text()  # recorded for next time


def test_failing_remote_program_leaves_only_a_partial_file(sshd, tmp_path):
    model = broken_onnx(quoted_model_dir(tmp_path) / "model.onnx")
    result = cli("bench", "--model", str(model), "--device", sshd.url, *FAST, env=sshd.env())
    assert_one_line_error(result, 1, f"bench failed: bench.py on {sshd.label} failed:")
    assert not (model.parent / BENCH_FILE).exists()
    partial = json.loads((model.parent / PARTIAL_FILE).read_text())
    assert partial["complete"] is False and partial["entries"][f"{sshd.label}/fp32"]["steps_done"] == ["info"]
    kept = list(sshd.remote_dir.iterdir())  # kept on the device for a look, then tidied here
    assert len(kept) == 1 and (kept[0] / "bench.py").is_file()
    shutil.rmtree(kept[0])


def test_missing_remote_python_is_the_users_to_fix(sshd, tmp_path):
    model = export_onnx(tmp_path / "model.onnx")
    env = sshd.env(EDGECOMP_REMOTE_PYTHON="/nonexistent/python3")
    result = cli("bench", "--model", str(model), "--device", sshd.url, *FAST, env=env)
    assert_one_line_error(result, 2, "/nonexistent/python3 not found there", "EDGECOMP_REMOTE_PYTHON")
    for leftover in sshd.remote_dir.iterdir():
        shutil.rmtree(leftover)


def test_runner_stages_odd_names_and_fetches_back(sshd, tmp_path):
    source = tmp_path / "a file; with 'quotes' & $(spaces).bin"
    source.write_bytes(os.urandom(4096))
    runner = SshRunner(parse_ssh_url(sshd.url), run_id="fetch-test", ssh_options=sshd.options(),
                       remote_python=sys.executable, remote_root=str(sshd.remote_dir))
    with runner:
        name = runner.stage(source, "payload.bin")
        assert runner.run("info", [])["python"]  # flushes the staged file with the programs
        assert (sshd.remote_dir / "fetch-test" / "payload.bin").read_bytes() == source.read_bytes()
        runner.fetch(name, tmp_path / "back" / "payload.bin")
    assert (tmp_path / "back" / "payload.bin").read_bytes() == source.read_bytes()
    assert not (sshd.remote_dir / "fetch-test").exists()


def test_runner_without_sftp_falls_back_to_the_scp_protocol(sshd_without_sftp, tmp_path):
    """scp (SFTP since OpenSSH 9) fails there with "Connection closed"; the runner retries with scp -O."""
    server = sshd_without_sftp
    source = tmp_path / "payload.bin"
    source.write_bytes(os.urandom(4096))
    plain = subprocess.run(["scp", *server.options(), "-o", "BatchMode=yes", "-P", str(server.port), str(source),
                            f"{server.user}@127.0.0.1:{tmp_path / 'direct.bin'}"], capture_output=True, text=True)
    assert plain.returncode != 0 and "subsystem request failed" in plain.stderr  # the server really lacks SFTP
    runner = SshRunner(parse_ssh_url(server.url), run_id="no-sftp", ssh_options=server.options(),
                       remote_python=sys.executable, remote_root=str(server.remote_dir))
    with runner:
        name = runner.stage(source, "payload.bin")
        assert runner.run("info", [])["python"]
        assert runner._legacy_scp  # switched to the original scp protocol
        runner.fetch(name, tmp_path / "back" / "payload.bin")
    assert (tmp_path / "back" / "payload.bin").read_bytes() == source.read_bytes()
    assert not (server.remote_dir / "no-sftp").exists()


def tiny_run(root: Path) -> Path:
    """A run directory (recipe.yaml + model.pt of an untrained ResNet-8) without running compress."""
    from conftest import tiny_recipe

    from edgecomp.core.models import build_model, model_payload
    from edgecomp.core.recipe import dump_recipe
    from edgecomp.core.rundir import save_tensors, write_text

    recipe = tiny_recipe(data={"val_subset": 16, "train_subset": 16, "test_subset": 8})
    write_text(root / "recipe.yaml", dump_recipe(recipe))
    save_tensors(root / "model.pt", model_payload(build_model(recipe.model), recipe.model))
    return root


def test_export_trt_on_a_device_without_tensorrt_is_refused(sshd, tmp_path):
    """export --trt --device goes through the same runner as bench: --accept-new-host-key included."""
    run = tiny_run(tmp_path)
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    result = cli("export", "--run", str(run), "--trt", "--device", sshd.url, "--accept-new-host-key",
                 env=sshd.env(known_hosts=empty))
    assert_one_line_error(result, 2, f"--trt: {sshd.label} has no TensorRT", "trtexec --onnx=model.onnx")
    assert f"[127.0.0.1]:{sshd.port}" in empty.read_text()  # the flag reached ssh
    assert not (run / "model.onnx").exists()  # refused before any work
    assert list(sshd.remote_dir.iterdir()) == []
