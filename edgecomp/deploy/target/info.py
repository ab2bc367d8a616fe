"""Report this device's facts; print one JSON object.

    python3 info.py

TensorRT, CUDA, JetPack/L4T (/etc/nv_tegra_release), power mode
(`nvpmodel -q`), clocks, memory (/proc/meminfo), onnxruntime and its
providers. Whatever this device does not have is null.
"""

from __future__ import annotations

import glob
import json
import os
import platform
import re
import shutil
import socket
import subprocess
from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:  # the type checker reads the package imports; the fallback below is the device's
    from . import bench as target_bench
    from . import runtime
else:
    try:
        from . import bench as target_bench
        from . import runtime
    except ImportError:
        import bench as target_bench
        import runtime

# JetPack per L4T release, from shared/reference/tensorrt-jetson.md; used only when
# the nvidia-jetpack package (the exact answer) is not installed.
JETPACK_BY_L4T = {"32.7": "4.6", "35": "5.1", "36.2": "6.0", "36.3": "6.0", "36.4": "6.1/6.2"}


def parse_l4t_release(text: str) -> Optional[str]:
    """`# R36 (release), REVISION: 4.0, GCID: ...` → "36.4.0"."""
    match = re.search(r"#\s*R(?P<major>\d+)\s*\(release\),\s*REVISION:\s*(?P<rev>[\d.]+)", text)
    return f"{match.group('major')}.{match.group('rev')}" if match else None


def jetpack_for_l4t(l4t: Optional[str]) -> Optional[str]:
    if not l4t:
        return None
    parts = l4t.split(".")
    for key in (".".join(parts[:2]), parts[0]):
        if key in JETPACK_BY_L4T:
            return JETPACK_BY_L4T[key]
    return None


def parse_nvpmodel(text: str) -> Optional[dict[str, Any]]:
    """`nvpmodel -q` prints `NV Power Mode: MAXN` and the mode id on the next line."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for index, line in enumerate(lines):
        match = re.match(r"NV Power Mode\s*:\s*(?P<name>\S.*)$", line)
        if match:
            following = lines[index + 1] if index + 1 < len(lines) else ""
            return {"id": int(following) if following.isdigit() else None, "name": match.group("name")}
    return None


def parse_meminfo(text: str) -> dict[str, Optional[float]]:
    values = {}
    for line in text.splitlines():
        match = re.match(r"(?P<key>\w+):\s+(?P<kb>\d+)\s*kB", line)
        if match:
            values[match.group("key")] = int(match.group("kb")) / 1024.0
    return {"total_mb": values.get("MemTotal"), "available_mb": values.get("MemAvailable")}


def _read(path: str) -> Optional[str]:
    try:
        with open(path, "rb") as handle:
            return handle.read().decode(errors="replace").replace("\x00", "").strip()
    except OSError:
        return None


def _run(command: list[str]) -> Optional[str]:
    if not shutil.which(command[0]) and not os.access(command[0], os.X_OK):
        return None
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def tensorrt_version() -> Optional[str]:
    try:
        import tensorrt
    except Exception:  # noqa: BLE001 - a broken install is "no TensorRT" here
        return None
    return tensorrt.__version__


def trtexec_version(trtexec: Optional[str]) -> Optional[str]:
    """The TensorRT of trtexec (its banner `[TensorRT v100300]`), for a device without the Python module."""
    text = _run([trtexec, "--help"]) if trtexec else None
    match = re.search(r"\[TensorRT v(\d+)\]", text or "")
    return target_bench.tensorrt_version(match.group(1)) if match else None


def gpu_name() -> Optional[str]:
    """CUDA's name of the first GPU of a machine that is not a Jetson (engines are tied to it)."""
    text = _run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"])
    return text.splitlines()[0].strip() if text and text.strip() else None


def onnxruntime_info() -> Optional[dict[str, Any]]:
    try:
        import onnxruntime
    except Exception:  # noqa: BLE001
        return None
    return {"version": onnxruntime.__version__, "providers": onnxruntime.get_available_providers()}


def cuda_version() -> Optional[str]:
    text = _read("/usr/local/cuda/version.json")
    if text:
        try:
            return json.loads(text)["cuda"]["version"]
        except (ValueError, KeyError, TypeError):
            pass
    match = re.search(r"CUDA Version (\S+)", _read("/usr/local/cuda/version.txt") or "")
    return match.group(1) if match else None


def cuda_python() -> bool:
    for module in ("cuda.bindings.runtime", "cuda.cudart"):
        try:
            __import__(module)
            return True
        except ImportError:
            continue
    return False


def jetpack_version(l4t: Optional[str]) -> Optional[str]:
    """The nvidia-jetpack package's version when installed (exact), else from the L4T table."""
    version = _run(["dpkg-query", "-W", "-f=${Version}", "nvidia-jetpack"])
    if version and version.strip():
        return version.strip().split("+")[0].split("-")[0]
    return jetpack_for_l4t(l4t)


def clocks() -> dict[str, Any]:
    cpu = []
    for path in sorted(glob.glob("/sys/devices/system/cpu/cpu[0-9]*/cpufreq/scaling_cur_freq")):
        value = _read(path)
        if value and value.isdigit():
            cpu.append(int(value) / 1000.0)  # kHz → MHz
    gpu = None
    for folder in sorted(glob.glob("/sys/class/devfreq/*")):  # Jetson GPUs: *.gpu, *.gv11b, *.ga10b
        if re.search(r"gpu|gv11b|ga10b|gp10b", os.path.basename(folder)):
            value = _read(os.path.join(folder, "cur_freq"))
            gpu = int(value) / 1e6 if value and value.isdigit() else None  # Hz → MHz
            break
    return {"cpu_mhz": cpu or None, "gpu_mhz": gpu}


def cpu_model() -> Optional[str]:
    for line in (_read("/proc/cpuinfo") or "").splitlines():
        if line.lower().startswith(("model name", "hardware")):
            return line.split(":", 1)[1].strip()
    return platform.processor() or None


def run(args) -> dict[str, Any]:
    import numpy

    l4t = parse_l4t_release(_read("/etc/nv_tegra_release") or "")
    nvpmodel = _run(["nvpmodel", "-q"]) or _run(["/usr/sbin/nvpmodel", "-q"])
    trtexec, tensorrt = _which("trtexec", "/usr/src/tensorrt/bin/trtexec"), tensorrt_version()
    return {
        "hostname": socket.gethostname(),
        "model": _read("/proc/device-tree/model") or gpu_name(),
        "machine": platform.machine(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "l4t": l4t,
        "jetpack": jetpack_version(l4t) if l4t else None,
        "tensorrt": tensorrt,
        "cuda": cuda_version(),
        "cuda_python": cuda_python(),
        "onnxruntime": onnxruntime_info(),
        "trtexec": trtexec,
        "trtexec_tensorrt": trtexec_version(trtexec) if trtexec and not tensorrt else None,
        "tegrastats": _which("tegrastats", "/usr/bin/tegrastats"),
        "power_mode": parse_nvpmodel(nvpmodel) if nvpmodel else None,
        "clocks": clocks(),
        "memory": parse_meminfo(_read("/proc/meminfo") or ""),
    }


def _which(name: str, fallback: str) -> Optional[str]:
    return shutil.which(name) or (fallback if os.access(fallback, os.X_OK) else None)


if __name__ == "__main__":
    runtime.main("info", runtime.Parser(prog="info.py", description=__doc__.splitlines()[0]), run)
