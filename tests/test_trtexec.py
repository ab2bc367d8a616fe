"""Target-side parsing without TensorRT or a Jetson: trtexec summaries (8.4, 8.6, 10.x layouts),
tegrastats lines (Orin, Xavier, Nano), nvpmodel / L4T / meminfo, trtexec command lines, and the
bench/info programs run against fake trtexec, tegrastats and nvpmodel scripts."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import pytest
from bench_helpers import export_onnx, fake_tool

from edgecomp.deploy.target import bench as target_bench
from edgecomp.deploy.target import build as target_build
from edgecomp.deploy.target import info as target_info
from edgecomp.deploy.target.bench import parse_tegrastats, parse_trtexec, summarize_power

TS = "[11/28/2025-10:00:05]"

# TensorRT 8.6 (JetPack 6.0) layout, written from the reference's summary format.
TRT86 = f"""&&&& RUNNING TensorRT.trtexec [TensorRT v8602] # /usr/src/tensorrt/bin/trtexec --loadEngine=model.engine
{TS} [I] === Trace details ===
{TS} [I] Average on 10 runs - GPU latency: 0.61 ms - Host latency: 0.70 ms (enqueue 0.25 ms)
{TS} [W] [TRT] Using an engine plan file across different models of devices is not recommended
{TS} [I]
{TS} [I] === Performance summary ===
{TS} [I] Throughput: 1543.21 qps
{TS} [I] Latency: min = 0.652 ms, max = 1.204 ms, mean = 0.701 ms, median = 0.690 ms, percentile(90%) = 0.720 ms, percentile(95%) = 0.750 ms, percentile(99%) = 0.910 ms
{TS} [I] Enqueue Time: min = 0.211 ms, max = 0.402 ms, mean = 0.250 ms, median = 0.245 ms, percentile(90%) = 0.270 ms, percentile(95%) = 0.280 ms, percentile(99%) = 0.350 ms
{TS} [I] H2D Latency: min = 0.012 ms, max = 0.040 ms, mean = 0.015 ms, median = 0.014 ms, percentile(90%) = 0.018 ms, percentile(95%) = 0.020 ms, percentile(99%) = 0.030 ms
{TS} [I] GPU Compute Time: min = 0.610 ms, max = 1.100 ms, mean = 0.650 ms, median = 0.640 ms, percentile(90%) = 0.670 ms, percentile(95%) = 0.700 ms, percentile(99%) = 0.850 ms
{TS} [I] D2H Latency: min = 0.005 ms, max = 0.020 ms, mean = 0.006 ms, median = 0.006 ms, percentile(90%) = 0.007 ms, percentile(95%) = 0.008 ms, percentile(99%) = 0.012 ms
{TS} [I] Total Host Walltime: 0.0648 s
{TS} [I] Total GPU Compute Time: 0.065 s
{TS} [W] * GPU compute time is unstable, with coefficient of variance = 7.21%.
{TS} [W]   If not already in use, locking GPU clock frequency or adding --useSpinWait may improve the stability.
{TS} [I] Explanations of the performance metrics are printed in the verbose logs.
{TS} [I]
&&&& PASSED TensorRT.trtexec [TensorRT v8602] # /usr/src/tensorrt/bin/trtexec --loadEngine=model.engine
"""

# TensorRT 10.3 (JetPack 6.1/6.2): the same lines, version code major*10000, an enqueue-bound warning.
TRT103 = TRT86.replace("v8602", "v100300").replace(
    f"{TS} [W] * GPU compute time is unstable, with coefficient of variance = 7.21%.",
    f"{TS} [W] * Throughput may be bound by Enqueue Time rather than GPU Compute and the GPU may be under-utilized.",
)

# TensorRT 8.4 and older: only percentile(99%), an End-to-End Host Latency line, one field lacking '='.
TRT84 = f"""&&&& RUNNING TensorRT.trtexec [TensorRT v8401] # trtexec --loadEngine=model.engine
{TS} [I] === Performance summary ===
{TS} [I] Throughput: 412.3 qps
{TS} [I] Latency: min = 2.31 ms, max = 3.9 ms, mean = 2.42 ms, median = 2.40 ms, percentile(99%) = 3.1 ms
{TS} [I] End-to-End Host Latency: min = 2.4 ms, max = 6.1 ms, mean = 4.7 ms, median = 4.7 ms, percentile(99%) = 5.9 ms
{TS} [I] Enqueue Time: min = 0.5 ms, max = 1.1 ms, mean 0.6 ms, median = 0.6 ms, percentile(99%) = 0.9 ms
{TS} [I] H2D Latency: min = 0.02 ms, max = 0.05 ms, mean = 0.03 ms, median = 0.03 ms, percentile(99%) = 0.04 ms
{TS} [I] GPU Compute Time: min = 2.2 ms, max = 3.8 ms, mean = 2.35 ms, median = 2.33 ms, percentile(99%) = 3.0 ms
{TS} [I] D2H Latency: n/a
{TS} [I] Total Host Walltime: 3.00 s
{TS} [I] Total GPU Compute Time: 2.98 s
{TS} [I] Explanations of the performance metrics are printed in the verbose logs.
&&&& PASSED TensorRT.trtexec [TensorRT v8401] # trtexec --loadEngine=model.engine
"""

FAILED = f"""&&&& RUNNING TensorRT.trtexec [TensorRT v8502] # trtexec --loadEngine=model.engine
{TS} [E] Error[1]: [stdArchiveReader.cpp::StdArchiveReader::40] Error Code 1: Serialization (Serialization assertion stdVersionRead == serializationVersion failed.Version tag does not match.)
{TS} [E] Error[4]: [runtime.cpp::deserializeCudaEngine::66] Error Code 4: Internal Error (Engine deserialization failed.)
{TS} [E] Engine set up failed
&&&& FAILED TensorRT.trtexec [TensorRT v8502] # trtexec --loadEngine=model.engine
"""


def test_trtexec_86_summary():
    parsed = parse_trtexec(TRT86)
    assert parsed["passed"] is True and parsed["summary"] is True
    assert parsed["tensorrt_version"] == "8.6.2"
    assert parsed["throughput_qps"] == pytest.approx(1543.21)
    latency = parsed["latency_ms"]
    assert latency == pytest.approx({"min": 0.652, "max": 1.204, "mean": 0.701, "median": 0.690, "p50": 0.690,
                                     "p90": 0.720, "p95": 0.750, "p99": 0.910})
    # exact line names: "Latency" is host latency, never the H2D/D2H lines nor the trace average
    assert parsed["h2d_ms"]["mean"] == pytest.approx(0.015)
    assert parsed["d2h_ms"]["p99"] == pytest.approx(0.012)
    assert parsed["gpu_compute_ms"]["median"] == pytest.approx(0.640)
    assert parsed["enqueue_ms"]["p90"] == pytest.approx(0.270)
    assert parsed["total_host_walltime_s"] == pytest.approx(0.0648)
    assert parsed["total_gpu_compute_s"] == pytest.approx(0.065)
    assert parsed["gpu_compute_cv_percent"] == pytest.approx(7.21)
    assert any("coefficient of variance" in w for w in parsed["warnings"])
    assert any("across different models of devices" in w for w in parsed["warnings"])
    assert parsed["unparsed"] == [] and parsed["errors"] == []


def test_trtexec_10x_summary():
    parsed = parse_trtexec(TRT103)
    assert parsed["tensorrt_version"] == "10.3.0" and parsed["passed"] is True
    assert parsed["latency_ms"]["p99"] == pytest.approx(0.910)
    assert parsed["gpu_compute_cv_percent"] is None
    assert any("bound by Enqueue Time" in w for w in parsed["warnings"])


def test_trtexec_84_summary_with_missing_fields():
    parsed = parse_trtexec(TRT84)
    assert parsed["tensorrt_version"] == "8.4.1"
    assert parsed["latency_ms"] == pytest.approx({"min": 2.31, "max": 3.9, "mean": 2.42, "median": 2.40,
                                                  "p50": 2.40, "p99": 3.1})
    assert "p90" not in parsed["latency_ms"]  # 8.4 prints only percentile(99%)
    assert parsed["end_to_end_ms"]["mean"] == pytest.approx(4.7)
    assert parsed["enqueue_ms"] == pytest.approx({"min": 0.5, "max": 1.1, "median": 0.6, "p50": 0.6, "p99": 0.9})
    assert "Enqueue Time: mean 0.6 ms" in parsed["unparsed"]  # a field lacking '=' is skipped, not fatal
    assert parsed["d2h_ms"] == {}
    assert "D2H Latency: n/a" in parsed["unparsed"]


def test_trtexec_failed_run():
    parsed = parse_trtexec(FAILED)
    assert parsed["passed"] is False and parsed["summary"] is False
    assert parsed["tensorrt_version"] == "8.5.2"
    assert "latency_ms" not in parsed
    assert parsed["errors"][-1] == "Engine set up failed"


def test_trtexec_garbage_does_not_raise():
    parsed = parse_trtexec("no summary\n[I] Latency: whatever\n\x00\n=== Performance summary ===\nLatency:\n")
    assert parsed["passed"] is None
    assert parsed["latency_ms"] == {}


@pytest.mark.parametrize("code, version", [("8201", "8.2.1"), ("8502", "8.5.2"), ("8602", "8.6.2"),
                                           ("100300", "10.3.0"), ("101300", "10.13.0")])
def test_tensorrt_version_codes(code, version):
    assert target_bench.tensorrt_version(code) == version


# ---------------------------------------------------------------- tegrastats

# JetPack 6 Orin Nano/NX style: rails with mW units, VDD_IN is the module input.
ORIN = ("11-28-2025 10:00:00 RAM 2690/7620MB (lfb 2x4MB) SWAP 0/3810MB (cached 0MB) CPU [12%@1510,8%@1510,"
        "5%@1510,3%@1510,off,off] EMC_FREQ 10%@3199 GR3D_FREQ 61%@[624] NVENC off NVDEC off NVJPG off "
        "cpu@48.5C soc2@46.9C soc0@47.1C gpu@48.2C tj@48.5C soc1@46.8C "
        "VDD_IN 7345mW/6120mW VDD_CPU_GPU_CV 2311mW/1850mW VDD_SOC 1988mW/1900mW")
# JetPack 4/5 Xavier NX style: the same rails without units.
XAVIER = ("RAM 2448/7772MB (lfb 1x4MB) SWAP 0/3886MB (cached 0MB) CPU [10%@1190,5%@1190,off,off,off,off] "
          "EMC_FREQ 0% GR3D_FREQ 0% AO@37C GPU@36.5C PMIC@100C AUX@36C CPU@37.5C thermal@36.85C "
          "VDD_IN 3749/3749 VDD_CPU_GPU_CV 616/616 VDD_SOC 1232/1232")
# Jetson Nano (JetPack 4.6): POM_5V_IN is the input rail.
NANO = ("RAM 1216/3964MB (lfb 330x4MB) SWAP 0/1982MB (cached 0MB) IRAM 0/252kB(lfb 252kB) CPU [3%@102,2%@102,"
        "0%@102,0%@102] EMC_FREQ 0%@204 GR3D_FREQ 0%@76 APE 25 PLL@20C CPU@22.5C PMIC@100C GPU@22C AO@30C "
        "thermal@22.25C POM_5V_IN 1095/1095 POM_5V_GPU 0/0 POM_5V_CPU 123/123")


def test_tegrastats_orin_line():
    sample = parse_tegrastats(ORIN)
    assert sample["rails"] == {"VDD_IN": {"mw": 7345, "avg_mw": 6120},
                               "VDD_CPU_GPU_CV": {"mw": 2311, "avg_mw": 1850},
                               "VDD_SOC": {"mw": 1988, "avg_mw": 1900}}
    assert (sample["ram_used_mb"], sample["ram_total_mb"], sample["gpu_load_percent"]) == (2690, 7620, 61)


def test_tegrastats_xavier_and_nano_lines():
    xavier = parse_tegrastats(XAVIER)
    assert set(xavier["rails"]) == {"VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC"}  # RAM/SWAP are not rails
    assert xavier["rails"]["VDD_IN"] == {"mw": 3749, "avg_mw": 3749}
    nano = parse_tegrastats(NANO)
    assert set(nano["rails"]) == {"POM_5V_IN", "POM_5V_GPU", "POM_5V_CPU"}  # IRAM 0/252kB is not a rail
    assert nano["ram_used_mb"] == 1216 and nano["gpu_load_percent"] == 0


def test_power_summary_prefers_the_input_rail():
    samples = [parse_tegrastats(ORIN), parse_tegrastats(ORIN.replace("VDD_IN 7345mW", "VDD_IN 7655mW"))]
    summary = summarize_power(samples, latency_ms=2.0, batch=1, interval_ms=100)
    assert summary["input_rail"] == "VDD_IN" and summary["samples"] == 2
    assert summary["mean_mw"] == pytest.approx(7500) and summary["peak_mw"] == 7655
    assert summary["energy_mj_per_image"] == pytest.approx(7500 * 2.0 / 1000)  # mW × ms = µJ
    agx_xavier = parse_tegrastats("RAM 1/2MB GPU 100/100 CPU 300/300 SOC 900/900")
    assert summarize_power([agx_xavier], 1.0, 1, 100)["input_rail"] == "sum of rails"
    assert summarize_power([agx_xavier], 1.0, 1, 100)["mean_mw"] == 1300
    assert summarize_power([parse_tegrastats("no rails here")], 1.0, 1, 100) is None


# ---------------------------------------------------------------- info and build helpers


def test_info_parsers():
    assert target_info.parse_l4t_release(
        "# R36 (release), REVISION: 4.0, GCID: 37537400, BOARD: generic, EABI: aarch64, DATE: Fri Sep 13") == "36.4.0"
    assert target_info.parse_l4t_release("# R32 (release), REVISION: 7.1, GCID: 29818004") == "32.7.1"
    assert target_info.parse_l4t_release("") is None
    assert target_info.jetpack_for_l4t("36.4.0") == "6.1/6.2"
    assert target_info.jetpack_for_l4t("35.3.1") == "5.1"
    assert target_info.jetpack_for_l4t("32.7.1") == "4.6"
    assert target_info.parse_nvpmodel("NV Fan Mode:quiet\nNV Power Mode: MAXN_SUPER\n2\n") == {"id": 2,
                                                                                             "name": "MAXN_SUPER"}
    assert target_info.parse_nvpmodel("garbage") is None
    memory = target_info.parse_meminfo("MemTotal:        7620000 kB\nMemFree: 1 kB\nMemAvailable:    5120000 kB\n")
    assert memory["total_mb"] == pytest.approx(7620000 / 1024)


def build_args(**changes):
    values = {"onnx": "m.onnx", "engine": "m.engine", "precision": "fp16", "batch": 4, "max_batch": 8,
              "workspace_mb": 512, "timing_cache": None, "dla": None, "shape": ["input:1x28x28"]}
    return argparse.Namespace(**{**values, **changes})


def test_trtexec_build_command_lines():
    new = target_build.trtexec_build_command("trtexec", build_args(), "10.3.0")
    assert new[:4] == ["trtexec", "--onnx=m.onnx", "--saveEngine=m.engine", "--skipInference"]
    assert "--fp16" in new and "--memPoolSize=workspace:512M" in new
    assert {"--minShapes=input:1x1x28x28", "--optShapes=input:4x1x28x28", "--maxShapes=input:8x1x28x28"} <= set(new)
    old = target_build.trtexec_build_command("trtexec", build_args(precision="int8", dla=0), "8.2.1")
    assert "--workspace=512" in old and not any(a.startswith("--memPoolSize") for a in old)
    assert {"--int8", "--fp16", "--useDLACore=0", "--allowGPUFallback"} <= set(old)  # int8: the Q/DQ scales
    assert not any(a.startswith("--calib") for a in old)  # no implicit calibration: one meaning of INT8
    with pytest.raises(RuntimeError, match="NAME:CxHxW"):
        target_build.parse_shape_arg("1x28x28")


def test_trtexec_bench_command_runs_exactly_n():
    command = target_bench.trtexec_command("trtexec", "m.engine", 50, 10, ["input:2x1x28x28"])
    assert command == ["trtexec", "--loadEngine=m.engine", "--iterations=50", "--duration=0", "--warmUp=200",
                       "--shapes=input:2x1x28x28"]


def test_cuda_helpers_fail_in_one_line_without_a_gpu():
    from edgecomp.deploy.target import runtime

    try:
        cuda = runtime.cuda_runtime()
    except runtime.CudaError:
        pytest.skip("no CUDA runtime library on this machine")
    try:
        cuda.malloc(16)
    except runtime.CudaError as error:
        assert "\n" not in str(error) and "cudaMalloc failed" in str(error)
    else:
        pytest.skip("a working GPU is present: nothing to fail")


# ---------------------------------------------------------------- programs against fake Jetson tools


def run_program(program: str, *args: str, path_prefix=None, cwd=None) -> tuple[int, dict]:
    env = {**os.environ}
    if path_prefix:
        env["PATH"] = f"{path_prefix}{os.pathsep}{env['PATH']}"
    script = os.path.join(os.path.dirname(target_bench.__file__), f"{program}.py")
    done = subprocess.run([sys.executable, script, *args], capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=120)
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1, done.stdout  # exactly one JSON object on stdout
    return done.returncode, json.loads(lines[0])


def test_bench_program_with_fake_trtexec_and_tegrastats(tmp_path):
    tools = tmp_path / "bin"
    fake_tool(tools, "trtexec", f"cat <<'EOF'\n{TRT86}EOF\n")
    fake_tool(tools, "tegrastats", f"while :; do echo '{ORIN}'; sleep 0.05; done\n")
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"not really an engine")
    code, result = run_program("bench", "--model", str(engine), "--backend", "trtexec", "--batch", "2",
                               "--iterations", "50", path_prefix=tools)
    assert code == 0, result
    assert result["latency_ms"]["p50"] == pytest.approx(0.690) and result["latency_ms"]["p90"] == pytest.approx(0.72)
    assert result["throughput_fps"] == pytest.approx(1543.21 * 2)
    assert result["trtexec"]["gpu_compute_ms"]["mean"] == pytest.approx(0.650)
    assert result["power"]["input_rail"] == "VDD_IN" and result["power"]["mean_mw"] == pytest.approx(7345)


def test_bench_program_reports_a_failed_trtexec(tmp_path):
    tools = tmp_path / "bin"
    fake_tool(tools, "trtexec", f"cat <<'EOF'\n{FAILED}EOF\nexit 1\n")
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"x")
    code, result = run_program("bench", "--model", str(engine), "--backend", "trtexec", "--power", "off",
                               path_prefix=tools)
    assert code == 1 and result == {"error": "trtexec failed: Engine set up failed"}


def test_onnxruntime_bench_samples_power_while_running(tmp_path):
    tools = tmp_path / "bin"
    fake_tool(tools, "tegrastats", f"while :; do echo '{XAVIER}'; sleep 0.05; done\n")
    model = export_onnx(tmp_path / "model.onnx")
    code, result = run_program("bench", "--model", str(model), "--iterations", "5", "--warmup", "1",
                               path_prefix=tools)
    assert code == 0, result
    assert result["backend"] == "onnxruntime" and result["provider"] == "CPUExecutionProvider"
    assert set(result["latency_ms"]) == {"p50", "p90", "p99", "mean", "min", "max", "std"}
    assert result["power"]["samples"] >= 2 and result["power"]["mean_mw"] == pytest.approx(3749)
    assert result["peak_rss_mb"] > 0


def test_info_program_reads_nvpmodel(tmp_path):
    tools = tmp_path / "bin"
    fake_tool(tools, "nvpmodel", "echo 'NV Power Mode: MAXN'; echo 0\n")
    code, result = run_program("info", path_prefix=tools)
    assert code == 0
    assert result["power_mode"] == {"id": 0, "name": "MAXN"}
    assert result["memory"]["total_mb"] > 0
    import importlib.util

    has_trt = importlib.util.find_spec("tensorrt") is not None
    assert (result["tensorrt"] is not None) == has_trt  # null exactly when TensorRT is not importable
