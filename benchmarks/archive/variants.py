"""Run recipe variants over seeds and commit mean ± std of what they reached.

    python benchmarks/archive/variants.py --name schedule_ab --recipe quickstart.yaml --seeds 0 1 2 \
        --set augment.policy=randaugment --set augment.schedule.dense=9 \
        --variant constant augment.schedule.kind=constant \
        --variant linear augment.schedule.kind=linear

Each (variant, seed) is one `edgecomp compress` run under
benchmarks/archive/runs/<group or name>/ (resumable: rerunning the command continues). With
--share-dense, the variants of one seed start from the dense model the first
variant trained (dense.weights, dense.epochs=0), so they differ only after
pruning. Results: benchmarks/archive/results/<name>.json and .md.
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

import edgecomp
from edgecomp.core.recipe import load_recipe

HERE = Path(__file__).resolve().parent


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", required=True)
    parser.add_argument("--recipe", default="quickstart.yaml")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--set", dest="common", action="append", default=[], help="override for every variant")
    parser.add_argument("--variant", nargs="+", action="append", required=True, metavar=("NAME", "KEY=VALUE"))
    parser.add_argument("--share-dense", action="store_true")
    parser.add_argument("--group", help="run folder under benchmarks/runs (default: --name); benchmarks that "
                        "share a group reuse each other's finished runs of the same variant name")
    return parser.parse_args()


def run_one(args, name: str, overrides: list[str], seed: int, dense_ckpt: Path | None) -> dict:
    sets = [*args.common, *overrides, f"seed={seed}"]
    if dense_ckpt is not None:
        sets += [f"dense.weights={dense_ckpt}", "dense.epochs=0"]
    out = HERE / "runs" / (args.group or args.name) / f"{name}-s{seed}"
    start = time.perf_counter()
    result = edgecomp.compress(load_recipe(args.recipe, sets), out=out, resume=True)
    return {"variant": name, "seed": seed, "wall_s": round(time.perf_counter() - start, 1), "out": str(out),
            "dense": result.dense, "final": result.final, "rows": result.rows}


def summarize(runs: list[dict], variants: list[str]) -> list[dict]:
    table = []
    for name in variants:
        mine = [r for r in runs if r["variant"] == name]
        stat = lambda key: [r["final"][key] for r in mine]  # noqa: E731
        table.append({
            "variant": name, "seeds": [r["seed"] for r in mine],
            "final_test_mean": statistics.mean(stat("test_accuracy")),
            "final_test_std": statistics.stdev(stat("test_accuracy")) if len(mine) > 1 else 0.0,
            "final_val_mean": statistics.mean(stat("accuracy")),
            "final_val_std": statistics.stdev(stat("accuracy")) if len(mine) > 1 else 0.0,
            "dense_test_mean": statistics.mean(r["dense"]["test_accuracy"] for r in mine),
            "macs_ratio_mean": statistics.mean(stat("macs_ratio")),
            "latency_ms_median": statistics.median(stat("latency_ms")) if all(stat("latency_ms")) else None,
            "finetune_img_s_mean": statistics.mean(
                statistics.mean(x["train_throughput"] for x in r["rows"][1:] if x["train_throughput"]) for r in mine
            ) if any(x["train_throughput"] for r in mine for x in r["rows"][1:]) else None,
        })
    return table


def markdown(args, table: list[dict], command: str, wall: float) -> str:
    lines = [
        f"# {args.name}", "", f"Command: `{command}`", "",
        f"Recipe `{args.recipe}`, seeds {args.seeds}, common overrides {args.common or 'none'}"
        f"{', dense model shared per seed' if args.share_dense else ''}.", "",
        f"Host: {platform.platform()}, {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} torch threads; total wall time {wall / 60:.1f} min; "
        f"{datetime.now(timezone.utc):%Y-%m-%d}. Accuracy is deterministic per seed on CPU; host latency "
        "(median batch-1 PyTorch forward of the final model, over runs) and fine-tune throughput were taken "
        "on a shared machine and are noisy.", "",
        "| variant | final test acc (mean ± std) | final val acc | dense test acc | MACs ratio | host latency ms "
        "| fine-tune img/s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in table:
        rate = f"{row['finetune_img_s_mean']:.0f}" if row["finetune_img_s_mean"] else "–"
        latency = f"{row['latency_ms_median']:.2f}" if row.get("latency_ms_median") else "–"
        lines.append(
            f"| {row['variant']} | {row['final_test_mean']:.4f} ± {row['final_test_std']:.4f} "
            f"| {row['final_val_mean']:.4f} ± {row['final_val_std']:.4f} | {row['dense_test_mean']:.4f} "
            f"| {row['macs_ratio_mean']:.3f} | {latency} | {rate} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    args = parse_args()
    command = "python " + " ".join(shlex.quote(a) for a in ["benchmarks/archive/variants.py", *sys.argv[1:]])
    variants = {v[0]: v[1:] for v in args.variant}
    start, runs = time.perf_counter(), []
    for seed in args.seeds:
        dense_ckpt = None
        for name, overrides in variants.items():
            runs.append(run_one(args, name, overrides, seed, dense_ckpt))
            if args.share_dense and dense_ckpt is None:
                dense_ckpt = Path(runs[-1]["out"]) / "checkpoints" / "step_000.pt"
    wall = time.perf_counter() - start
    table = summarize(runs, list(variants))
    results = HERE / "results"
    results.mkdir(exist_ok=True)
    payload = {"command": command, "table": table, "runs": runs, "wall_s": round(wall, 1)}
    (results / f"{args.name}.json").write_text(json.dumps(payload, indent=1))
    (results / f"{args.name}.md").write_text(markdown(args, table, command, wall))
    print((results / f"{args.name}.md").read_text())


if __name__ == "__main__":
    main()
