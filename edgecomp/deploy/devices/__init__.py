"""Device profiles and `--device` strings.

The profiles are the YAML files beside this module (`edgecomp/deploy/devices/*.yaml`,
also reachable as the top-level `devices/`), read with `yaml.safe_load` and
validated by `DeviceProfile` (unknown keys rejected, every field described).

A device is named one of three ways:

- a profile name: `host`, `jetson-orin-nano-8gb`, ... (`edgecomp devices` lists them);
- a profile YAML file (a copy of a shipped one with `connection:` set);
- `ssh://[user@]host[:port]` (IPv6 as `ssh://user@[::1]:2222`): a device
  reached with the system `ssh`, its facts measured there.

`resolve_device` turns any of them into a `Device` (profile + connection);
every mistake is a one-line `DeviceError` naming `--device` (exit code 2).
"""

from __future__ import annotations

import difflib
import functools
import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import yaml
from packaging.version import Version
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ...core.errors import DeviceError

PROFILE_DIR = Path(__file__).parent
HOST = "host"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class JetPackRelease(_Strict):
    jetpack: str = Field(..., description="JetPack release, e.g. '6.2'")
    l4t: str = Field(..., description="L4T (Jetson Linux) release it ships, as in /etc/nv_tegra_release")
    tensorrt: str = Field(..., description="TensorRT major.minor it ships")
    cuda: str = Field(..., description="CUDA major.minor it ships")


class PowerMode(_Strict):
    id: int = Field(..., ge=0, description="nvpmodel mode id (`sudo nvpmodel -m <id>`)")
    name: str = Field(..., description="nvpmodel mode name as `nvpmodel -q` prints it")


class DeviceProfile(_Strict):
    name: str = Field(..., pattern=r"^[a-z0-9][a-z0-9._-]*$", description="profile name (the file's stem)")
    description: str = Field(..., description="one line for `edgecomp devices`")
    gpu_arch: Optional[str] = Field(
        ..., pattern=r"^sm_\d+$", description="CUDA architecture (sm_87 Orin, sm_72 Xavier, sm_53 Nano); null: no GPU"
    )
    memory_gb: Optional[float] = Field(..., gt=0, description="memory shared by CPU and GPU; null: not fixed (host)")
    dla_cores: int = Field(..., ge=0, description="Deep Learning Accelerator cores")
    jetpack_releases: list[JetPackRelease] = Field(
        ..., description="JetPack releases for this module and the L4T/TensorRT/CUDA versions they ship"
    )
    max_onnx_opset: Optional[int] = Field(
        ..., ge=7, description="highest ONNX opset the TensorRT of every listed release parses; null: no limit"
    )
    int8: bool = Field(..., description="fast INT8 inference exists (false on the Nano's Maxwell GPU)")
    power_mode: Optional[PowerMode] = Field(
        ..., description="power mode to pin before timing (`sudo nvpmodel -m <id>` then `sudo jetson_clocks`)"
    )
    connection: Optional[str] = Field(
        None, description="ssh://[user@]host[:port] that reaches this device; null: give --device ssh://..."
    )

    @field_validator("connection")
    @classmethod
    def _valid_url(cls, value: Optional[str]) -> Optional[str]:
        if value is not None:
            parse_ssh_url(value)  # raises DeviceError, a ValueError would be reworded
        return value

    @property
    def tensorrt_versions(self) -> list[str]:
        return sorted({r.tensorrt for r in self.jetpack_releases}, key=Version)


@dataclass(frozen=True)
class SshTarget:
    """Where `ssh` connects: user and port None leave them to ~/.ssh/config."""

    host: str
    user: Optional[str] = None
    port: Optional[int] = None

    @property
    def destination(self) -> str:
        """`user@host` for ssh (IPv6 addresses bare: ssh takes the port from -p)."""
        return f"{self.user}@{self.host}" if self.user else self.host

    @property
    def scp_host(self) -> str:
        """The host part of an scp path: IPv6 addresses need brackets before ':path'."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.user}@{host}" if self.user else host

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        user = f"{self.user}@" if self.user else ""
        port = f":{self.port}" if self.port else ""
        return f"ssh://{user}{host}{port}"

    @property
    def label(self) -> str:
        return self.url.removeprefix("ssh://")


@dataclass(frozen=True)
class Device:
    """A resolved `--device`: its profile (None for a bare ssh URL) and connection (None: this machine)."""

    profile: Optional[DeviceProfile]
    connection: Optional[SshTarget]

    @property
    def is_local(self) -> bool:
        return self.connection is None

    @property
    def label(self) -> str:
        """The key of this device in bench.json."""
        if self.profile is not None:
            return self.profile.name
        return self.connection.label if self.connection else HOST


# ---------------------------------------------------------------- profiles


@functools.cache
def load_profiles() -> dict[str, DeviceProfile]:
    """Every shipped profile, by name."""
    profiles = {}
    for path in sorted(PROFILE_DIR.glob("*.yaml")):
        profile = load_profile_file(path)
        if profile.name != path.stem:
            raise DeviceError(f"{path}: name {profile.name!r} differs from the file name {path.stem!r}")
        profiles[profile.name] = profile
    return profiles


def load_profile_file(path: Path) -> DeviceProfile:
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise DeviceError(f"--device {path}: cannot read the profile: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise DeviceError(f"--device {path}: a profile is a mapping of fields")
    try:
        return DeviceProfile.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        field = ".".join(str(p) for p in first["loc"]) or "profile"
        message = "unknown key" if first["type"] == "extra_forbidden" else first["msg"].lower()
        raise DeviceError(f"--device {path}: {field}: {message}") from None


def get_profile(name: str) -> DeviceProfile:
    """A shipped profile by name; an unknown name fails with the closest match."""
    profiles = load_profiles()
    if name in profiles:
        return profiles[name]
    close = difflib.get_close_matches(name, list(profiles), n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise DeviceError(
        f"--device {name!r}: unknown device{hint} (known: {', '.join(profiles)}; or ssh://user@host[:port])"
    )


# ---------------------------------------------------------------- ssh URLs

_URL = re.compile(r"^ssh://(?:(?P<user>[^@/]*)@)?(?P<host>\[[^\]/]*\]|[^:/@\[\]]*)(?::(?P<port>[^/]*))?/?$")
_USER = re.compile(r"^[A-Za-z_][A-Za-z0-9._-]*$")
# Host names and IPv4: letters, digits, dots, dashes; never a leading '-' (ssh would read an option).
_HOST = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?$")


def parse_ssh_url(url: str) -> SshTarget:
    """`ssh://[user@]host[:port]` → SshTarget; anything else is a one-line DeviceError."""
    match = _URL.match(url)
    if not match:
        raise DeviceError(f"--device {url!r}: malformed ssh URL (expected ssh://[user@]host[:port])")
    user, host, port = match.group("user"), match.group("host"), match.group("port")
    if user is not None and not _USER.match(user):
        raise DeviceError(f"--device {url!r}: bad user name {user!r}")
    return SshTarget(host=_check_host(url, host), user=user, port=_check_port(url, port))


def _check_host(url: str, host: str) -> str:
    if host.startswith("["):
        try:
            return str(ipaddress.IPv6Address(host[1:-1]))
        except ValueError:
            raise DeviceError(f"--device {url!r}: {host} is not an IPv6 address") from None
    if not host:
        raise DeviceError(f"--device {url!r}: the host is missing (expected ssh://[user@]host[:port])")
    if not _HOST.match(host):
        raise DeviceError(f"--device {url!r}: bad host name {host!r}")
    return host


def _check_port(url: str, port: Optional[str]) -> Optional[int]:
    if port is None:
        return None
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise DeviceError(f"--device {url!r}: port must be a number in 1..65535, got {port!r}")
    return int(port)


def resolve_device(name_or_url: str) -> Device:
    """A profile name, a profile YAML file or an ssh URL → Device (profile + connection)."""
    text = name_or_url.strip()
    if not text:
        raise DeviceError("--device: empty (give host, a profile name or ssh://user@host[:port])")
    if "://" in text:
        if not text.startswith("ssh://"):
            raise DeviceError(f"--device {text!r}: only ssh:// URLs reach devices")
        return Device(profile=None, connection=parse_ssh_url(text))
    if text.endswith((".yaml", ".yml")) and Path(text).is_file():
        profile = load_profile_file(Path(text))
    else:
        if "@" in text:
            raise DeviceError(f"--device {text!r}: did you mean ssh://{text}?")
        profile = get_profile(text)
    connection = parse_ssh_url(profile.connection) if profile.connection else None
    return Device(profile=profile, connection=connection)
