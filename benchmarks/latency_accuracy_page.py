"""The page of the accuracy-at-equal-latency comparison (issue 22): JSON, Markdown and a plot from the run files.

Called by `latency_accuracy.py summary`. The verdict follows benchmarks/PLAN.md (issue 22 and its amendment):
validation decides, the test set is reported beside it.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the benchmarks are scripts, not a package

from latency_accuracy import EFFECT, HERE, METHODS, OUT, load_cells, points, profiling, stamp  # noqa: E402
from paired_stats import paired_difference  # noqa: E402

REGIME2 = HERE / "results" / "converged" / "fmnist_regime_2k"
MISS = 0.05  # a final ratio more than 5% off its budget is named beside the verdict (PLAN.md amendment)


def verdict(low: float, mean: float, high: float) -> str:
    if low > 0 and mean >= EFFECT:
        return "shown"
    if high < 0:
        return "fails"
    if low <= 0 <= high:
        return "not supported in this regime"
    return "interval above zero, mean under the +1-point goal: not shown"


def dense_records() -> list[dict]:
    rows = []
    for folder in sorted(OUT.glob("dense-s*/")):
        record = json.loads((folder / "reference.json").read_text())
        seed = int(folder.name.split("-s")[1])
        old = REGIME2 / f"dense-s{seed}" / "reference.json"
        old_sha = json.loads(old.read_text()).get("weights_sha256") if old.is_file() else None
        rows.append({"seed": seed, "epochs": record["epochs"], "val_accuracy": record["val_accuracy"],
                     "test_accuracy": record["test_accuracy"], "train_val_gap": record["train_val_gap"],
                     "weights_sha256": record["weights_sha256"], "same_as_regime2": record["weights_sha256"] == old_sha})
    return rows


def timings() -> dict[tuple[float, int], dict]:
    found = {}
    for path in (OUT / "timing").glob("b*_seed*.json"):
        record = json.loads(path.read_text())
        found[float(record["budget"]), int(record["seed"])] = record
    return found


def comparison(cells: dict, times: dict, budget: float) -> dict:
    out = {"budget": budget}
    for key in ("val_accuracy", "test_accuracy"):
        diff = paired_difference(points(cells, budget, "latency", key), points(cells, budget, "tp_macs", key))
        out[key] = {"mean": diff.mean, "low": diff.low, "high": diff.high, "n": diff.n, "seeds": list(diff.seeds),
                    "diffs": list(diff.diffs)}
    val = out["val_accuracy"]
    out["verdict"] = verdict(val["low"], val["mean"], val["high"]) if val["n"] >= 2 else "fewer than 2 seeds"
    for method in METHODS:
        ratios = [times[budget, s][method]["ratio_p50"] for s in val["seeds"] if (budget, s) in times]
        cell_list = [cells[budget, method, s] for s in val["seeds"]]
        profiled = [p for p in (profiling(budget, method, s) for s in val["seeds"]) if p]  # the run's own record
        out[method] = {
            "val_mean": statistics.fmean(c["val_accuracy"] for c in cell_list),
            "test_mean": statistics.fmean(c["test_accuracy"] for c in cell_list),
            "macs_ratio_mean": statistics.fmean(c["macs_ratio"] for c in cell_list),
            "params_ratio_mean": statistics.fmean(c["params_ratio"] for c in cell_list if c.get("params_ratio")) if
            any(c.get("params_ratio") for c in cell_list) else None,
            "latency_ratios": ratios, "latency_ratio_median": statistics.median(ratios) if ratios else None,
            "missed_budget": [s for s in val["seeds"] if (budget, s) in times
                              and abs(times[budget, s][method]["ratio_p50"] / budget - 1) > MISS],
            "wall_s_mean": statistics.fmean(c["wall_s"] for c in cell_list),
            "profile_seconds_mean": statistics.fmean(p["seconds"] for p in profiled) if profiled else None,
            "profiles": profiled[0]["profiles"] if profiled else None,
        }
    return out


def plot(cells: dict, times: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for method, colour in zip(METHODS, ("tab:gray", "tab:blue")):
        points = [(times[b, s][method]["ratio_p50"], 100 * c["val_accuracy"])
                  for (b, m, s), c in cells.items() if m == method and (b, s) in times]
        if points:
            ax.scatter(*zip(*points), label=method, color=colour, alpha=0.8)
    for budget in sorted({b for b, _, _ in cells}):
        ax.axvline(budget, color="black", lw=0.6, ls=":")
    ax.set_xlabel("measured latency / dense (onnxruntime fp32, 1 thread, batch 1; one loop per seed)")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title("ResNet-20, Fashion-MNIST regime 2: every seed")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_page() -> None:
    cells, times = load_cells(), timings()
    seeds_path = OUT / "seeds.json"
    gate_path = OUT / "gate.json"
    budgets = sorted({b for b, _, _ in cells}, reverse=True)
    comparisons = [comparison(cells, times, b) for b in budgets]
    record = {"gate": json.loads(gate_path.read_text()) if gate_path.is_file() else None,
              "seeds": json.loads(seeds_path.read_text()) if seeds_path.is_file() else None,
              "dense": dense_records(), "comparisons": comparisons,
              "claim_holds": len(comparisons) == 2 and all(c["verdict"] == "shown" for c in comparisons),
              "written": stamp()["date"]}
    (HERE / "results" / "latency_accuracy.json").write_text(json.dumps(record, indent=1) + "\n")
    plot(cells, times, HERE / "results" / "latency_accuracy.png")
    (HERE / "results" / "latency_accuracy.md").write_text(markdown(record))


def markdown(record: dict) -> str:
    lines = ["# Accuracy at equal measured latency: latency-aware pruning vs Torch-Pruning to a MACs target", "",
             "Written by `benchmarks/latency_accuracy.py summary` from the run files; rule and amendment in "
             "`benchmarks/PLAN.md` (issue 22), committed before any run. ResNet-20, Fashion-MNIST regime 2 "
             "(2,000 training images; validation decides; full test set reported), onnxruntime fp32, 1 thread, "
             "batch 1. Differences are `latency − tp_macs` in points, paired by seed, 95% t-intervals.", ""]
    lines += ["| budget | seeds | val diff [95%] | test diff [95%] | verdict (validation) |", "|---:|---:|---|---|---|"]
    for c in record["comparisons"]:
        v, t = c["val_accuracy"], c["test_accuracy"]
        lines.append(f"| {c['budget']:.2f} | {v['n']} | {v['mean']:+.2f} [{v['low']:+.2f}, {v['high']:+.2f}] | "
                     f"{t['mean']:+.2f} [{t['low']:+.2f}, {t['high']:+.2f}] | {c['verdict']} |")
    lines += ["", f"Claim (shown at both budgets): **{'holds' if record['claim_holds'] else 'does not hold'}**.", "",
              "| budget | method | val mean | test mean | latency / dense, median of seeds [seeds] | MACs | params | "
              "missed the budget by > 5% | run (s) | profiling (s, profiles) |",
              "|---:|---|---:|---:|---|---:|---:|---|---:|---|"]
    for c in record["comparisons"]:
        for method in METHODS:
            m = c[method]
            ratios = ", ".join(f"{r:.3f}" for r in m["latency_ratios"]) or "not timed"
            median = f"{m['latency_ratio_median']:.3f}" if m["latency_ratio_median"] else "–"
            params = f"{m['params_ratio_mean']:.3f}" if m["params_ratio_mean"] else "–"
            prof = (f"{m['profile_seconds_mean']:.1f} ({m['profiles']}; "
                    f"{m['profile_seconds_mean'] / m['wall_s_mean']:.1%} of the run)") if m["profile_seconds_mean"] else "–"
            lines.append(f"| {c['budget']:.2f} | {method} | {m['val_mean']:.4f} | {m['test_mean']:.4f} | {median} "
                         f"[{ratios}] | {m['macs_ratio_mean']:.3f} | {params} | "
                         f"{', '.join(map(str, m['missed_budget'])) or 'none'} | {m['wall_s_mean']:.0f} | {prof} |")
    if record["seeds"]:
        s = record["seeds"]
        lines += ["", f"Seed count: s_d = {s['s_d_points']:.2f} points over seeds {s['spread_seeds']} at the hard budget "
                      f"→ n = {s['n']} (PLAN.md)."]
    if record["gate"]:
        g = record["gate"]
        lines += [f"Gate: per-call overhead {min(g['overhead_share']):.1%}–{max(g['overhead_share']):.1%} of the "
                  f"dense latency ({'passes' if g['passes'] else 'fails'}, < 20%)."]
    lines += ["", "Dense models (regime 2's gate recipe, retrained here):", "",
              "| seed | epochs | val | test | train − val | same sha256 as regime 2's |", "|---:|---:|---:|---:|---:|---|"]
    for d in record["dense"]:
        lines.append(f"| {d['seed']} | {d['epochs']} | {d['val_accuracy']:.4f} | {d['test_accuracy']:.4f} | "
                     f"{d['train_val_gap']:.4f} | {'yes' if d['same_as_regime2'] else 'no'} |")
    lines += ["", "![accuracy against measured latency](latency_accuracy.png)", ""]
    return "\n".join(lines)
