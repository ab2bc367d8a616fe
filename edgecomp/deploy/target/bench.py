"""Time a model on this device; print one JSON object.

    python3 bench.py --model model.onnx [--backend onnxruntime --provider cpu|cuda|tensorrt]
    python3 bench.py --model model.engine [--backend tensorrt|trtexec]
        [--iterations 100] [--warmup 10] [--batch 1] [--threads 0] [--power auto|off]

onnxruntime and tensorrt: warm-up calls, then `iterations` timed calls with
perf_counter, each returning only after the device is done (TensorRT: copy
in, execute_async_v3, copy out, stream synchronise). trtexec: its own timing,
read from its "=== Performance summary ===" block. Power: `tegrastats`
sampled alongside the timed loop when it exists (Jetson).

Keys of the result: latency_ms {p50, p90, p99, mean, min, max, std},
throughput_fps (images/s = batch / mean latency), peak_rss_mb,
device_memory_mb, power (null off Jetson), trtexec (null unless used).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
import time
from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:
    from . import runtime
else:
    try:  # imported as edgecomp.deploy.target.bench (tests, the host)
        from . import runtime
    except ImportError:  # run as a script on the device, beside runtime.py
        import runtime

TRTEXEC_PATHS = ["/usr/src/tensorrt/bin/trtexec"]
TEGRASTATS_PATHS = ["/usr/bin/tegrastats"]
POWER_MIN_SECONDS = 1.0  # keep the model busy at least this long so tegrastats samples it


# ---------------------------------------------------------------- trtexec output

# The summary's lines, by exact name: "Latency" must not catch "H2D Latency".
TRTEXEC_STATS = {
    "Latency": "latency_ms",  # host latency = H2D + GPU compute + D2H
    "End-to-End Host Latency": "end_to_end_ms",
    "Enqueue Time": "enqueue_ms",
    "H2D Latency": "h2d_ms",
    "GPU Compute Time": "gpu_compute_ms",
    "D2H Latency": "d2h_ms",
}
TRTEXEC_SCALARS = {
    "Throughput": "throughput_qps",
    "Total Host Walltime": "total_host_walltime_s",
    "Total GPU Compute Time": "total_gpu_compute_s",
}
_LINE = re.compile(r"^(?:\[[^\]]*\]\s*)*?(?:\[(?P<level>[IWEVF])\]\s*)(?P<body>.*)$")
_FIELD = re.compile(r"^\s*(?P<key>[A-Za-z]+(?:\(\d+(?:\.\d+)?%\))?)\s*=\s*"  # min, percentile(99%), ...
                    r"(?P<value>[-+0-9.eE]+|nan|inf)\s*(?P<unit>ms|us|s)?\s*$")
_SCALAR = re.compile(r"^\s*(?P<value>[-+0-9.eE]+)\s*(?P<unit>qps|ms|us|s)?\b")
_CV = re.compile(r"coefficient of variance\s*=\s*(?P<value>[0-9.]+)\s*%")
_VERSION = re.compile(r"\[TensorRT v(?P<code>\d+)\]")
_TO_MS = {"ms": 1.0, "us": 1e-3, "s": 1e3, None: 1.0}


def _field_name(key: str) -> str:
    """min, max, mean, median, percentile(90%) → p90, percentile(99.9%) → p99.9."""
    match = re.match(r"percentile\((?P<q>[\d.]+)%\)", key)
    return f"p{match.group('q')}" if match else key


def _parse_stats(text: str) -> tuple[dict[str, float], list[str]]:
    stats, skipped = {}, []
    for part in text.split(","):
        if not part.strip():
            continue
        match = _FIELD.match(part)
        if not match:  # e.g. a field lacking '=': keep going, say what was skipped
            skipped.append(part.strip())
            continue
        value = float(match.group("value")) * _TO_MS[match.group("unit")]
        stats[_field_name(match.group("key"))] = value
    if "median" in stats and "p50" not in stats:
        stats["p50"] = stats["median"]
    return stats, skipped


def tensorrt_version(code: str) -> str:
    """trtexec's `[TensorRT v8601]` → 8.6.1; `v100300` → 10.3.0 (10.x packs major*10000)."""
    number = int(code)
    if number >= 100000:
        return f"{number // 10000}.{number // 100 % 100}.{number % 100}"
    return f"{number // 1000}.{number // 100 % 10}.{number % 100}"


def _split_line(raw: str) -> tuple[Optional[str], str]:
    """Strip the timestamp and level prefix: `[11/28/2025-10:00:00] [I] Latency: ...`."""
    match = _LINE.match(raw.strip())
    if not match:
        return None, raw.strip()
    return match.group("level"), match.group("body").strip()


def parse_trtexec(output: str) -> dict[str, Any]:
    """Read a trtexec log: the performance summary, warnings, PASSED/FAILED, version.

    Never raises on odd lines: unknown lines are ignored, malformed fields are
    listed under "unparsed". `summary` is False when no summary block was found.
    """
    result: dict[str, Any] = {"passed": None, "tensorrt_version": None, "summary": False, "warnings": [],
                              "errors": [], "unparsed": [], "gpu_compute_cv_percent": None}
    in_summary = False
    for raw in output.splitlines():
        if raw.startswith("&&&&"):
            result["passed"] = " PASSED " in f" {raw} " and "FAILED" not in raw
        version = _VERSION.search(raw)
        if version and result["tensorrt_version"] is None:
            result["tensorrt_version"] = tensorrt_version(version.group("code"))
        level, body = _split_line(raw)
        if "=== Performance summary ===" in body:
            in_summary, result["summary"] = True, True
            continue
        if level in ("E", "F"):
            result["errors"].append(body)
        elif level == "W":
            result["warnings"].append(body)
            cv = _CV.search(body)
            if cv:
                result["gpu_compute_cv_percent"] = float(cv.group("value"))
        if in_summary and body.startswith("==="):
            in_summary = False  # the next block (e.g. "=== Explanations ...")
        if in_summary and level != "W":
            _summary_line(body, result)
    return result


def _summary_line(body: str, result: dict[str, Any]) -> None:
    name, sep, rest = body.partition(":")
    name = name.strip()
    if not sep:
        return
    if name in TRTEXEC_STATS:
        stats, skipped = _parse_stats(rest)
        result[TRTEXEC_STATS[name]] = stats
        result["unparsed"].extend(f"{name}: {s}" for s in skipped)
    elif name in TRTEXEC_SCALARS:
        match = _SCALAR.match(rest)
        if match:
            result[TRTEXEC_SCALARS[name]] = float(match.group("value"))
        else:
            result["unparsed"].append(body)


def find_tool(name: str, extra: list[str]) -> Optional[str]:
    found = shutil.which(name)
    return found or next((p for p in extra if os.access(p, os.X_OK)), None)


def warmup_ms(warmup_iterations: int) -> int:
    """trtexec warms up for a time, not a count: 200 ms (its default) whenever a warm-up was asked for.
    The command line, with this value, is recorded in the result, so bench.json says what really ran."""
    return 200 if warmup_iterations else 0


def trtexec_command(trtexec: str, model: str, iterations: int, warmup: int, shapes: list[str]) -> list[str]:
    source = f"--loadEngine={model}" if not model.endswith(".onnx") else f"--onnx={model}"
    # --duration=0 with --iterations=N runs exactly N timed inferences; warm-up is in ms for trtexec.
    command = [trtexec, source, f"--iterations={iterations}", "--duration=0", f"--warmUp={warmup_ms(warmup)}"]
    if shapes:
        command.append("--shapes=" + ",".join(shapes))
    return command


def run_trtexec(args) -> dict[str, Any]:
    trtexec = find_tool("trtexec", TRTEXEC_PATHS)
    if trtexec is None:
        raise RuntimeError("trtexec not found (looked on PATH and in /usr/src/tensorrt/bin)")
    command = trtexec_command(trtexec, args.model, args.iterations, args.warmup, args.shape)
    with PowerSampler.maybe(args.power, args.power_interval_ms) as power:
        done = subprocess.run(command, capture_output=True, text=True)
    log = done.stdout + done.stderr
    sys.stderr.write(log)  # the host keeps it as the program's log
    parsed = parse_trtexec(log)
    if done.returncode != 0 or parsed["passed"] is False or not parsed.get("latency_ms"):
        reason = parsed["errors"][-1] if parsed["errors"] else f"exit code {done.returncode}, no performance summary"
        raise RuntimeError(f"trtexec failed: {reason}")
    # TensorRT 8.4 prints no percentile(90%): missing statistics stay null, the keys stay the same.
    latency = {key: parsed["latency_ms"].get(key) for key in ("p50", "p90", "p99", "mean", "min", "max", "std")}
    qps = parsed.get("throughput_qps")
    return {"backend": "trtexec", "provider": "tensorrt", "tensorrt_version": parsed["tensorrt_version"],
            "command": command, "warmup_ms": warmup_ms(args.warmup), "latency_ms": latency,
            "throughput_fps": qps * args.batch if qps else None, "peak_rss_mb": None, "device_memory_mb": None,
            "power": power.summary(latency.get("mean"), args.batch), "trtexec": parsed}


# ---------------------------------------------------------------- tegrastats

_RAIL = re.compile(r"(?<![\w@])(?P<name>[A-Z][A-Z0-9_]*) (?P<now>\d+)(?:mW)?/(?P<avg>\d+)(?:mW)?(?=\s|$)")
_RAM = re.compile(r"\bRAM (?P<used>\d+)/(?P<total>\d+)MB")
_GR3D = re.compile(r"\bGR3D_FREQ (?P<load>\d+)%")
INPUT_RAILS = ("VDD_IN", "POM_5V_IN")  # the module's input: Orin Nano/NX and Xavier NX; Nano


def parse_tegrastats(line: str) -> dict[str, Any]:
    """One tegrastats line → rails {name: {mw, avg_mw}}, RAM in MB, GPU load.

    Rails are `<NAME> <mW>/<avg mW>` with or without a `mW` suffix
    (`VDD_IN 5036mW/5036mW` on JetPack 5/6, `POM_5V_IN 1095/1095` on JetPack 4);
    `RAM 2448/7772MB` and `SWAP .../...MB` are not rails.
    """
    rails = {m.group("name"): {"mw": int(m.group("now")), "avg_mw": int(m.group("avg"))}
             for m in _RAIL.finditer(line)}
    ram, gr3d = _RAM.search(line), _GR3D.search(line)
    return {
        "rails": rails,
        "ram_used_mb": int(ram.group("used")) if ram else None,
        "ram_total_mb": int(ram.group("total")) if ram else None,
        "gpu_load_percent": int(gr3d.group("load")) if gr3d else None,
    }


def summarize_power(samples: list[dict[str, Any]], latency_ms: Optional[float], batch: int,
                    interval_ms: int) -> Optional[dict[str, Any]]:
    """Mean power over the samples; the input rail when the module reports one, else the sum of rails."""
    samples = [s for s in samples if s["rails"]]
    if not samples:
        return None
    names = sorted({name for s in samples for name in s["rails"]})
    rails = {n: _mean([s["rails"][n]["mw"] for s in samples if n in s["rails"]]) for n in names}
    rail = next((n for n in INPUT_RAILS if n in rails), None)
    totals = [s["rails"][rail]["mw"] if rail else sum(r["mw"] for r in s["rails"].values()) for s in samples
              if not rail or rail in s["rails"]]
    mean_mw = _mean(totals)
    loads = [s["gpu_load_percent"] for s in samples if s["gpu_load_percent"] is not None]
    ram = [s["ram_used_mb"] for s in samples if s["ram_used_mb"] is not None]
    return {
        "samples": len(samples), "interval_ms": interval_ms, "input_rail": rail or "sum of rails",
        "mean_mw": mean_mw, "peak_mw": max(totals), "rails_mw": rails,
        "energy_mj_per_image": mean_mw * latency_ms / batch / 1000.0 if latency_ms else None,
        "gpu_load_percent": _mean(loads) if loads else None, "ram_peak_mb": max(ram) if ram else None,
    }


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


class PowerSampler:
    """`tegrastats --interval <ms>` as a subprocess while the model runs; lines parsed as they come."""

    def __init__(self, tegrastats: Optional[str], interval_ms: int):
        self.tegrastats, self.interval_ms = tegrastats, interval_ms
        self.samples: list[dict[str, Any]] = []
        self.process: Optional[subprocess.Popen] = None
        self.started = time.perf_counter()

    @classmethod
    def maybe(cls, mode: str, interval_ms: int) -> PowerSampler:
        return cls(find_tool("tegrastats", TEGRASTATS_PATHS) if mode == "auto" else None, interval_ms)

    @property
    def active(self) -> bool:
        return self.process is not None

    def __enter__(self) -> PowerSampler:
        if self.tegrastats:
            self.process = subprocess.Popen([self.tegrastats, "--interval", str(self.interval_ms)],
                                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            self.reader = threading.Thread(target=self._read, daemon=True)
            self.reader.start()
        self.started = time.perf_counter()
        return self

    def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None  # started by __enter__, stdout=PIPE
        for line in self.process.stdout:
            self.samples.append(parse_tegrastats(line))

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def __exit__(self, *exc) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
            self.reader.join(timeout=5)

    def summary(self, latency_ms: Optional[float], batch: int) -> Optional[dict[str, Any]]:
        return summarize_power(self.samples, latency_ms, batch, self.interval_ms) if self.tegrastats else None


# ---------------------------------------------------------------- own timing loop


def run_backend(args) -> dict[str, Any]:
    backend = runtime.open_backend(args.backend, args.model, args.batch, args.provider, args.threads)
    try:
        feeds = runtime.random_inputs(backend.inputs)
        infer = lambda: backend.infer(feeds)  # noqa: E731
        with PowerSampler.maybe(args.power, args.power_interval_ms) as power:
            times = runtime.time_inference(infer, args.iterations, args.warmup)
            while power.active and power.elapsed() < POWER_MIN_SECONDS:
                infer()  # untimed: only so that tegrastats sees the model running
        summary = runtime.latency_summary(times, args.batch)
        return {
            "backend": backend.name, "provider": backend.provider, "runtime_version": backend.version,
            "inputs": [{"name": n, "shape": list(s), "dtype": str(d)} for n, s, d in backend.inputs],
            **summary, "peak_rss_mb": runtime.peak_rss_mb(), "device_memory_mb": backend.device_memory_mb(),
            "power": power.summary(summary["latency_ms"]["mean"], args.batch), "trtexec": None,
        }
    finally:
        backend.close()


def run(args) -> dict[str, Any]:
    if args.iterations < 1 or args.batch < 1 or args.warmup < 0:
        raise RuntimeError("--iterations and --batch must be >= 1, --warmup >= 0")
    if not os.path.isfile(args.model):
        raise RuntimeError(f"model file not found: {args.model}")
    args.backend = args.backend or runtime.default_backend(args.model)
    result = run_trtexec(args) if args.backend == "trtexec" else run_backend(args)
    result.setdefault("runtime_version", None)
    result.setdefault("inputs", None)
    return {"model": os.path.basename(args.model), "batch": args.batch, "iterations": args.iterations,
            "warmup": args.warmup, **result}


def parser():
    p = runtime.Parser(prog="bench.py", description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("--backend", choices=["onnxruntime", "tensorrt", "trtexec"], default=None)
    p.add_argument("--provider", choices=["cpu", "cuda", "tensorrt"], default="cpu", help="onnxruntime EP")
    p.add_argument("--iterations", type=int, default=100)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads (0: its default)")
    p.add_argument("--power", choices=["auto", "off"], default="auto")
    p.add_argument("--power-interval-ms", type=int, default=100)
    p.add_argument("--shape", action="append", default=[], help="trtexec: NAME:BxCxHxW (repeatable)")
    return p


if __name__ == "__main__":
    runtime.main("bench", parser(), run)
