"""Device profiles and --device strings."""

from __future__ import annotations

import shlex

import pytest
import yaml
from bench_helpers import REPO, assert_one_line_error, cli

from edgecomp.core.errors import DeviceError, UserInputError
from edgecomp.deploy.devices import (
    PROFILE_DIR,
    DeviceProfile,
    SshTarget,
    get_profile,
    load_profile_file,
    load_profiles,
    parse_ssh_url,
    resolve_device,
)
from edgecomp.deploy.runners import HostRunner, SshRunner, make_runner

EXPECTED = {"host", "jetson-orin-nano-8gb", "jetson-orin-nano-8gb-super", "jetson-orin-nx-16gb",
            "jetson-agx-orin-64gb", "jetson-xavier-nx", "jetson-nano"}


def test_every_shipped_profile_loads_and_validates():
    profiles = load_profiles()
    assert set(profiles) == EXPECTED
    for name, profile in profiles.items():
        raw = yaml.safe_load((PROFILE_DIR / f"{name}.yaml").read_text())
        assert DeviceProfile.model_validate(raw) == profile
        assert profile.connection is None
    assert (REPO / "devices").resolve() == PROFILE_DIR.resolve()  # the top-level symlink


def test_profile_facts_from_the_reference():
    p = load_profiles()
    assert {p[n].gpu_arch for n in EXPECTED - {"host"}} == {"sm_87", "sm_72", "sm_53"}
    assert p["jetson-nano"].gpu_arch == "sm_53" and p["jetson-nano"].int8 is False
    assert p["jetson-nano"].dla_cores == 0 and p["jetson-orin-nano-8gb"].dla_cores == 0
    assert p["jetson-xavier-nx"].dla_cores == 2 and p["jetson-agx-orin-64gb"].dla_cores == 2
    assert p["jetson-orin-nano-8gb-super"].power_mode.name == "MAXN_SUPER"
    assert [r.jetpack for r in p["jetson-orin-nano-8gb-super"].jetpack_releases] == ["6.2"]
    assert p["jetson-orin-nx-16gb"].tensorrt_versions == ["8.5", "8.6", "10.3"]
    assert p["jetson-orin-nano-8gb"].max_onnx_opset == 17  # what TensorRT 8.5/8.6 parse
    assert p["jetson-nano"].max_onnx_opset == 13  # TensorRT 8.2 on JetPack 4.6
    assert p["host"].gpu_arch is None and p["host"].jetpack_releases == []
    for profile in p.values():
        for release in profile.jetpack_releases:
            assert (release.jetpack, release.tensorrt) in {("4.6", "8.2"), ("5.1", "8.5"), ("6.0", "8.6"),
                                                           ("6.1", "10.3"), ("6.2", "10.3")}


def test_unknown_profile_suggests_the_closest_name():
    with pytest.raises(DeviceError, match=r"unknown device; did you mean 'jetson-orin-nano-8gb'\?"):
        get_profile("jetson-orin-nano")
    with pytest.raises(DeviceError, match="did you mean ssh://nvidia@jetson"):
        resolve_device("nvidia@jetson")


def test_unknown_device_on_the_cli_is_one_line_exit_2(tmp_path):
    model = tmp_path / "m.onnx"
    model.write_bytes(b"")
    result = cli("bench", "--model", str(model), "--device", "jetson-xavier")
    assert_one_line_error(result, 2, "--device 'jetson-xavier': unknown device; did you mean 'jetson-xavier-nx'?")


def test_profile_file_rejects_unknown_keys_and_reads_a_connection(tmp_path):
    data = yaml.safe_load((PROFILE_DIR / "jetson-orin-nano-8gb.yaml").read_text())
    data["connection"] = "ssh://nvidia@orin.local:2222"
    good = tmp_path / "my-orin.yaml"
    good.write_text(yaml.safe_dump(data))
    device = resolve_device(str(good))
    assert device.profile.name == "jetson-orin-nano-8gb" and not device.is_local
    assert device.connection == SshTarget(host="orin.local", user="nvidia", port=2222)
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**data, "gpu": "orin"}))
    with pytest.raises(DeviceError, match="gpu: unknown key"):
        load_profile_file(bad)
    bad.write_text(yaml.safe_dump({**data, "connection": "ssh://nvidia@orin:99999"}))
    with pytest.raises(DeviceError, match="port must be a number in 1..65535"):
        load_profile_file(bad)


@pytest.mark.parametrize("url, host, user, port", [
    ("ssh://root@127.0.0.1:2222", "127.0.0.1", "root", 2222),
    ("ssh://nvidia@jetson.local", "jetson.local", "nvidia", None),
    ("ssh://jetson", "jetson", None, None),  # user and port from ~/.ssh/config or ssh's defaults
    ("ssh://jetson:22/", "jetson", None, 22),
    ("ssh://me@[::1]:2200", "::1", "me", 2200),
    ("ssh://me@[fe80::1]", "fe80::1", "me", None),
])
def test_ssh_urls(url, host, user, port):
    target = parse_ssh_url(url)
    assert (target.host, target.user, target.port) == (host, user, port)
    assert parse_ssh_url(target.url) == target  # round trip


def test_ipv6_destinations_for_ssh_and_scp():
    target = parse_ssh_url("ssh://me@[::1]:2200")
    assert target.destination == "me@::1" and target.scp_host == "me@[::1]"


@pytest.mark.parametrize("url, fragment", [
    ("ssh://", "the host is missing"),
    ("ssh://user@", "the host is missing"),
    ("ssh://user@host:0", "port must be a number in 1..65535"),
    ("ssh://user@host:65536", "port must be a number in 1..65535"),
    ("ssh://user@host:ssh", "port must be a number"),
    ("ssh://user@host/some/path", "malformed ssh URL"),
    ("ssh://-oProxyCommand=x@host", "bad user name"),
    ("ssh://user@-oProxyCommand=x", "bad host name"),
    ("ssh://us er@host", "bad user name"),
    ("ssh://user@[not-ipv6]:22", "is not an IPv6 address"),
    ("http://user@host", "only ssh:// URLs"),
    ("", "--device: empty"),
])
def test_malformed_ssh_urls_are_one_line_device_errors(url, fragment):
    with pytest.raises(DeviceError) as info:
        resolve_device(url)
    message = str(info.value)
    assert fragment in message and "\n" not in message and "--device" in message
    assert isinstance(info.value, UserInputError)  # exit code 2


def test_malformed_url_on_the_cli(tmp_path):
    model = tmp_path / "m.onnx"
    model.write_bytes(b"")
    result = cli("bench", "--model", str(model), "--device", "ssh://user@host:notaport")
    assert_one_line_error(result, 2, "device error: --device 'ssh://user@host:notaport'", "port")


def test_runner_choice():
    assert isinstance(make_runner(resolve_device("host")), HostRunner)
    runner = make_runner(resolve_device("ssh://u@h:2"), ssh_options=[])
    assert isinstance(runner, SshRunner) and runner.label == "u@h:2"
    with pytest.raises(DeviceError, match="the profile has no connection"):
        make_runner(resolve_device("jetson-orin-nx-16gb"))


def test_ssh_command_lines_check_host_keys_and_quote_everything():
    runner = SshRunner(parse_ssh_url("ssh://u@h:2222"), run_id="r1")
    command = runner.ssh_command(runner.remote_command("bench", ["--model", "model.onnx", "--x", "a b;rm -rf ~"]))
    assert command[:2] == ["ssh", "-o"] and "BatchMode=yes" in command and "ConnectTimeout=10" in command
    assert "StrictHostKeyChecking=yes" in command and "-F" not in command  # ~/.ssh/config is honoured
    assert command[-3:-1] == ["--", "u@h"] and command[command.index("-p") + 1] == "2222"
    # the remote login shell splits the last word into `sh -c SCRIPT`; sh splits SCRIPT: each argument survives
    shell, flag, script = shlex.split(command[-1])
    assert (shell, flag) == ("sh", "-c")
    assert shlex.split(script) == ["cd", ".cache/edgecomp/r1", "&&", "exec", "python3", "bench.py", "--model",
                                   "model.onnx", "--x", "a b;rm -rf ~"]
    relaxed = SshRunner(parse_ssh_url("ssh://h"), accept_new_host_key=True, ssh_options=["-F", "cfg"])
    scp = relaxed.scp_command(["a"], "h:dir/")
    assert "StrictHostKeyChecking=accept-new" in scp and "-P" not in scp and scp[-3:] == ["--", "a", "h:dir/"]
    assert scp.index("StrictHostKeyChecking=accept-new") < scp.index("-F")  # ours first: ssh keeps the first value
    with pytest.raises(DeviceError, match="EDGECOMP_REMOTE_DIR"):
        SshRunner(parse_ssh_url("ssh://h"), remote_root="dir with space")


def test_devices_command_lists_every_profile():
    result = cli("devices")
    assert result.returncode == 0, result.stderr
    for name in EXPECTED:
        assert name in result.stdout
    assert "sm_53" in result.stdout
    assert max(len(line) for line in result.stdout.splitlines()) <= 80  # an 80-column terminal
    one = cli("devices", "jetson-orin-nano-8gb-super")
    assert one.returncode == 0 and "MAXN_SUPER" in one.stdout and "JetPack 6.2" in one.stdout
    assert max(len(line) for line in one.stdout.splitlines()) <= 80
    assert_one_line_error(cli("devices", "jetson-orin-nano-9gb"), 2, "did you mean")
