"""edgecomp's own training paths on networks with strided 1x1 convolutions of few input channels, in many fresh
processes under AVX2's oneDNN kernels, each with a timeout: none may hang, and every such convolution must run
guarded (`cpu_guard.unit_stride_1x1`) or on NCHW batches, never channels-last.

    .venv/bin/python benchmarks/cpu_guard_soak.py [--runs 30] [--paths dense finetune study]

Paths (each a real `edgecomp` command in a fresh process, ONEDNN_MAX_CPU_ISA=AVX2, which gives any x86 host the
AVX2 kernels, where an unguarded channels-last backward hangs or aborts):
  dense     compress whose dense stage trains ResNet-20 at width 4 (shortcuts fed 4 and 8 channels), then one
            pruning step (taylor importance: a backward pass) and a fine-tune
  finetune  compress from ResNet-8 pruned to 30% of its MACs at round_to 4 (narrow shortcuts), two fine-tunes
  study     `edgecomp study` on the pruned ResNet-8 (train_until_plateau)
The child counts, per risky convolution call with gradients on: guarded, NCHW input, or channels-last input
(unsafe). Results: benchmarks/results/cpu_guard_soak.json (one row per process) and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
TIMEOUT_S = 300

# Installed as sitecustomize.py in the child's PYTHONPATH, so that every Python process of the run (the study's
# spawned workers too) counts its own calls and writes them to $SOAK_COUNTS/<pid>.json on exit.
WATCH = r"""
import atexit, json, os
import torch
import torch.nn as nn
from edgecomp.compression import cpu_guard
from edgecomp.core.data import nchw_strides
counts = {"guarded": 0, "nchw": 0, "channels_last": 0}
plain, guarded = nn.Conv2d.forward, cpu_guard._unit_stride_forward

def watched(self, x):
    if torch.is_grad_enabled() and self in cpu_guard.risky_convs(self):  # a backward may follow
        counts["nchw" if x.stride() == nchw_strides(x.shape) else "channels_last"] += 1
    return plain(self, x)

def counted(self, x):
    counts["guarded"] += 1
    return guarded(self, x)

def save():
    with open(os.path.join(os.environ["SOAK_COUNTS"], f"{os.getpid()}.json"), "w") as stream:
        json.dump(counts, stream)

nn.Conv2d.forward, cpu_guard._unit_stride_forward = watched, counted
atexit.register(save)
"""


def narrow_resnet20(num_classes: int = 10, in_channels: int = 1):
    """ResNet-20 at width 4: its stride-2 shortcuts take 4 and 8 channels from the start (the `dense` path)."""
    from edgecomp.core.models import CifarResNet

    return CifarResNet(20, num_classes, in_channels=in_channels, width=4)


def recipe(path: str, folder: Path) -> Path:
    data = {"train_subset": 512, "val_subset": 256, "test_subset": 256, "batch_size": 32}
    model = {"arch": "cifar_resnet8", "num_classes": 10, "in_channels": 1, "input_size": 28}
    body = {"name": path, "seed": 0, "model": model, "data": {"dataset": "fashion_mnist", **data},
            "dense": {"epochs": 1}, "prune": {"steps": 2, "target": {"macs": 0.3}, "round_to": 4},
            "finetune": {"epochs_per_step": 1}, "device": {"latency_iterations": 2},
            "augment": {"policy": "randaugment"}}
    if path == "dense":
        body["model"] = {**model, "arch": "cpu_guard_soak:narrow_resnet20"}
        body["prune"] = {"steps": 1, "target": {"macs": 0.6}, "round_to": 2, "importance": "taylor"}
    file = folder / f"{path}.yaml"
    file.write_text(yaml.safe_dump(body))
    return file


def command(path: str, file: Path, out: Path) -> list[str]:
    if path == "study":
        return ["study", "--recipe", str(file), "--sizes", "0.3", "--magnitudes", "0", "--max-epochs", "2",
                "--workers", "1", "--out", str(out)]
    return ["compress", "--recipe", str(file), "--out", str(out)]


def run_one(path: str, index: int, folder: Path) -> dict:
    counts_dir = folder / f"counts_{path}_{index}"
    counts_dir.mkdir()
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2", "PYTHONPATH": f"{folder}{os.pathsep}{HERE}",
           "SOAK_COUNTS": str(counts_dir)}
    started = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, "-m", "edgecomp",
                               *command(path, recipe(path, folder), folder / f"{path}_{index}")],
                              capture_output=True, text=True, timeout=TIMEOUT_S, env=env, cwd=folder)
        rc = proc.returncode
    except subprocess.TimeoutExpired:
        rc = "timeout"
    counts = {"guarded": 0, "nchw": 0, "channels_last": 0, "processes": 0}
    for file in counts_dir.glob("*.json"):
        counts["processes"] += 1
        for key, value in json.loads(file.read_text()).items():
            counts[key] += value
    return {"path": path, "run": index, "rc": rc, "seconds": round(time.perf_counter() - started, 1),
            "counts": counts}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--paths", nargs="+", default=["dense", "finetune", "study"])
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "sitecustomize.py").write_text(WATCH)
        for index in range(args.runs):
            for path in args.paths:
                rows.append(run_one(path, index, Path(tmp)))
                print(json.dumps(rows[-1]), flush=True)
    results = HERE / "results"
    (results / "cpu_guard_soak.json").write_text(json.dumps(rows, indent=1))
    lines = ["# Training paths under AVX2's oneDNN kernels, fresh processes (benchmarks/cpu_guard_soak.py)", "",
             f"Command: `.venv/bin/python benchmarks/cpu_guard_soak.py {' '.join(sys.argv[1:])}`; timeout "
             f"{TIMEOUT_S} s a process; ONEDNN_MAX_CPU_ISA=AVX2.", "",
             "| path | runs | exit 0 | hangs (timeout) | other exits | risky calls guarded | on NCHW | channels-last |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for path in args.paths:
        mine = [r for r in rows if r["path"] == path]
        total = {k: sum((r["counts"] or {}).get(k, 0) for r in mine) for k in ("guarded", "nchw", "channels_last")}
        lines.append(f"| {path} | {len(mine)} | {sum(r['rc'] == 0 for r in mine)} | "
                     f"{sum(r['rc'] == 'timeout' for r in mine)} | "
                     f"{sum(r['rc'] not in (0, 'timeout') for r in mine)} | {total['guarded']} | {total['nchw']} | "
                     f"{total['channels_last']} |")
    (results / "cpu_guard_soak.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
