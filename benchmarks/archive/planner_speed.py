"""The two latency planners at matched measured latency, no training: which keeps more MACs for a latency budget?

    .venv/bin/python benchmarks/planner_speed.py [--cases resnet18 ... cifar_resnet20:28] [--seeds 0 1]
        [--budgets 0.5 0.3] [--rounds 300] [--out DIR]

For each network (torchvision at 3x224x224 with 10 classes, or ARCH:PX for edgecomp's models, e.g. cifar_resnet20:28
at 1x28x28) and weight seed (random weights drawn from the seed: each seed is another model, not a re-timing),
onnxruntime fp32, 1 thread, batch 1, this host:
  model    `prune.target.planner: model`: the latency model profiled on the probed channel step, channels chosen
           under the budget, the closed loop (`meet_budget`) until the measured latency is in [0.95, 1] x budget
  aligned  `prune.target.planner: aligned`: Torch-Pruning (global, group L2) with round_to = the probed block,
           its MACs share searched by the same closed loop
  same     aligned at the MACs the `model` plan kept (latency at equal MACs)
  grid     aligned at 0.92x and 1.08x the MACs the `aligned` plan kept (its latency curve around the budget)
Then everything is timed again in one loop of `--rounds` rounds (order shuffled each round, compare.py) beside
the dense model. MACs at matched latency: the aligned curve (aligned, same and grid points; a least-squares line
of log MACs on the measured latency ratio) read at the `model` plan's measured latency; `extrapolated` when that
latency lies outside the curve's points.

One JSON cell per network and seed under benchmarks/results/planner_speed/ as it lands (a stopped run resumes);
the page is written by benchmarks/planner_speed_page.py. The rule it answers is in benchmarks/PLAN.md.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import onnxruntime
import torch
import torchvision

from edgecomp.compression.latency_prune import Attempt, aligned_proposals, build_table, meet_budget, model_proposals
from edgecomp.compression.latency_run import whole_timer
from edgecomp.core.models import build_model, measure_size
from edgecomp.core.recipe import ModelSection, PruneSection
from edgecomp.deploy.latency import channel_counts
from edgecomp.deploy.latency.profiles import Profiler, ProfileSettings
from edgecomp.deploy.runners import HostRunner

HERE = Path(__file__).resolve().parent
CELLS = HERE / "results" / "planner_speed"
CASES = ["resnet18", "resnet50", "mobilenet_v2", "mobilenet_v3_large", "efficientnet_b0", "regnet_y_400mf",
         "shufflenet_v2_x1_0", "cifar_resnet20:28"]
LOOP_ROUNDS = 100  # the closed loop's rounds per timing (the recipe default, prune.target.latency_iterations)
GRID = (0.92, 1.08)


def network(case: str, seed: int) -> tuple[str, torch.nn.Module, torch.Tensor]:
    """(name, network with weights drawn from `seed`, example input) for `resnet18` or `cifar_resnet20:28`."""
    arch, _, px = case.partition(":")
    torch.manual_seed(seed)
    if arch.startswith("cifar_"):
        size = int(px or 32)
        cfg = ModelSection(arch=arch, num_classes=10, in_channels=1, input_size=size)
        model, example, name = build_model(cfg), torch.zeros(1, 1, size, size), f"{arch}_{size}px"
    else:
        size = int(px or 224)
        model, example = getattr(torchvision.models, arch)(num_classes=10), torch.zeros(1, 3, size, size)
        name = arch if size == 224 else f"{arch}_{size}px"
    for module in model.modules():  # fresh BN layers are all ones: give them trained-looking, differing scales
        if isinstance(module, torch.nn.BatchNorm2d):
            torch.nn.init.uniform_(module.weight, 0.2, 1.0)
    return name, model.eval(), example


def measurer(profiler: Profiler, dense: torch.nn.Module):
    def measure(trial: torch.nn.Module) -> Attempt:
        timed = profiler.compare([dense, trial], iterations=LOOP_ROUNDS)
        ratio = timed["ratios"][1]
        return Attempt(0.0, ratio["p50"], ratio["low"], ratio["high"], timed["models"][1]["p50"],
                       timed["models"][0]["p50"], True)

    return measure


def matched_macs(curve: list[tuple[float, float]], latency: float) -> tuple[float, bool]:
    """The MACs share the aligned curve [(latency ratio, MACs share)] keeps at `latency`: a least-squares line of
    log MACs on latency through the curve's points (one noisy timing moves it less than a piecewise line would),
    and whether `latency` lies outside their range (extrapolated)."""
    xs, ys = [x for x, _ in curve], [math.log(y) for _, y in curve]
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    spread = sum((x - mean_x) ** 2 for x in xs)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys)) / spread if spread else 0.0
    return math.exp(mean_y + slope * (latency - mean_x)), not min(xs) <= latency <= max(xs)


def run_cell(case: str, seed: int, budgets: list[float], rounds: int, cells: Path) -> None:
    name, dense, example = network(case, seed)
    path = cells / f"{name}_seed{seed}.json"
    if path.is_file():
        return
    shape = tuple(example.shape[1:])
    settings = ProfileSettings(device="host", runtime="onnxruntime", threads=1, iterations=30)
    dense_size = measure_size(dense, example)
    started = time.perf_counter()
    with HostRunner() as runner:
        profiler = Profiler(runner, settings, shape)
        base = PruneSection(target={"latency": budgets[0]})
        table, build = build_table(dense, example, base, 10, settings.key(shape, name), profiler.observe,
                                   base.target.profiles, seed, whole=whole_timer(profiler, LOOP_ROUNDS),
                                   widths="probed")
        block = build.probe_step or base.round_to
        unit = table.predict({n: c for n, c in channel_counts(dense).items() if n in table.layers})
        models, labels, loops = [dense], ["dense"], {}
        for budget in budgets:
            cfg = base.model_copy(update={"target": base.target.model_copy(update={"latency": budget})})
            measure = measurer(profiler, dense)
            chosen = {}
            for planner in ("model", "aligned"):
                loop_started = time.perf_counter()
                proposals = model_proposals(dense, example, cfg, table, unit, 10, name=name) if planner == "model" \
                    else aligned_proposals(dense, example, cfg, block, dense_size.macs, 1.0, 10, name=name)
                result = meet_budget(*proposals, budget, cfg.target, measure)
                chosen[planner] = result.model
                loops[f"{planner}_{budget}"] = {"attempts": [a.as_dict() for a in result.attempts],
                                                "met": result.met, "nudges": result.nudges,
                                                "seconds": round(time.perf_counter() - loop_started, 1)}
            propose, _ = aligned_proposals(dense, example, cfg, block, dense_size.macs, 1.0, 10, name=name)
            model_share = measure_size(chosen["model"], example).macs / dense_size.macs
            aligned_share = measure_size(chosen["aligned"], example).macs / dense_size.macs
            extra = {"same": propose(model_share).model, "grid_low": propose(aligned_share * GRID[0]).model,
                     "grid_high": propose(aligned_share * GRID[1]).model}
            for label, model in {**chosen, **extra}.items():
                models.append(model)
                labels.append(f"{label}_{budget}")
        final = profiler.compare(models, iterations=rounds)
    cell = record(name, seed, budgets, shape, dense_size, example, block, build, models, labels, final, loops)
    cell["steps"] = table.steps
    cell["seconds"] = round(time.perf_counter() - started, 1)
    cells.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(cell, indent=1))
    print(json.dumps({"cell": path.name, **{b: cell["budgets"][b]["macs_gain"] for b in cell["budgets"]}}),
          flush=True)


def record(name, seed, budgets, shape, dense_size, example, block, build, models, labels, final, loops) -> dict:
    rows = {}
    for label, model, ratio, timing in zip(labels, models, final["ratios"], final["models"]):
        size = measure_size(model, example)
        rows[label] = {"latency": ratio["p50"], "low": ratio["low"], "high": ratio["high"], "p50_ms": timing["p50"],
                       "macs": size.macs / dense_size.macs, "params": size.params / dense_size.params}
    summary = {}
    for budget in budgets:
        mine = {label.rsplit("_", 1)[0]: row for label, row in rows.items() if label.endswith(f"_{budget}")}
        curve = [(mine[k]["latency"], mine[k]["macs"]) for k in ("aligned", "same", "grid_low", "grid_high")]
        at_latency, outside = matched_macs(curve, mine["model"]["latency"])
        summary[str(budget)] = {
            "model_latency": mine["model"]["latency"], "aligned_latency": mine["aligned"]["latency"],
            "model_macs": mine["model"]["macs"], "aligned_macs_at_model_latency": at_latency,
            "extrapolated": outside, "macs_gain": mine["model"]["macs"] / at_latency - 1,
            "latency_at_equal_macs": mine["model"]["latency"] / mine["same"]["latency"] - 1,
            "model_params": mine["model"]["params"], "aligned_params": mine["aligned"]["params"],
            "both_in_band": all(0.95 * budget <= mine[k]["latency"] <= budget for k in ("model", "aligned")),
        }
    return {"arch": name, "seed": seed, "input": list(shape), "block": block, "probe": build.probe,
            "latency_model_seconds": round(build.seconds, 1),
            "dense": {"p50_ms": final["models"][0]["p50"], "macs": dense_size.macs, "params": dense_size.params},
            "models": rows, "budgets": summary, "loops": loops, "final_rounds": final["rounds"],
            "runtime": f"onnxruntime {onnxruntime.__version__}", "threads": 1, "batch": 1,
            "host": platform.node(), "python": sys.version.split()[0], "torch": torch.__version__,
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": "benchmarks/planner_speed.py " + " ".join(sys.argv[1:])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=CASES)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--budgets", nargs="+", type=float, default=[0.5, 0.3])
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--out", type=Path, default=CELLS)
    args = parser.parse_args()
    for seed in args.seeds:
        for case in args.cases:
            run_cell(case, seed, args.budgets, args.rounds, args.out)


if __name__ == "__main__":
    main()
