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

from latency_accuracy import (BASE, EFFECT, HARD, HERE, JUDGED, METHODS, OUT, load_cells, points,  # noqa: E402
                              profiling, stamp)
from paired_stats import paired_difference  # noqa: E402

REGIME2 = HERE / "results" / "converged" / "fmnist_regime_2k"
BUDGETS = (0.5, HARD)  # PLAN.md, second amendment
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
        if not (folder / "reference.json").is_file():  # still training
            continue
        record = json.loads((folder / "reference.json").read_text())
        seed = int(folder.name.split("-s")[1])
        old = REGIME2 / f"dense-s{seed}" / "reference.json"
        old_sha = json.loads(old.read_text()).get("weights_sha256") if old.is_file() else None
        rows.append({"seed": seed, "epochs": record["epochs"], "val_accuracy": record["val_accuracy"],
                     "test_accuracy": record["test_accuracy"], "train_val_gap": record["train_val_gap"],
                     "weights_sha256": record["weights_sha256"],
                     "same_as_regime2": record["weights_sha256"] == old_sha})
    return rows


def timings() -> dict[tuple[float, int], dict]:
    found = {}
    for path in (OUT / "timing").glob("b*_seed*.json"):
        record = json.loads(path.read_text())
        found[float(record["budget"]), int(record["seed"])] = record
    return found


def interval(diff) -> dict:
    return {"mean": diff.mean, "low": diff.low if diff.n > 1 else None, "high": diff.high if diff.n > 1 else None,
            "n": diff.n, "seeds": list(diff.seeds), "differences": list(diff.differences)}


def seed_ranges(seeds: list[int]) -> str:
    """[0, 1, 2, 5, 6] -> "seeds 0-2, 5-6": the planned seeds that did not run, without listing 180 of them."""
    runs: list[list[int]] = []
    for seed in seeds:
        if runs and seed == runs[-1][-1] + 1:
            runs[-1].append(seed)
        else:
            runs.append([seed])
    return "seeds " + ", ".join(f"{r[0]}" if len(r) == 1 else f"{r[0]}–{r[-1]}" for r in runs)


def comparison(cells: dict, times: dict, budget: float, seeds: list[int], method: str) -> dict:
    """`method` - tp_macs at `budget` over the planned seeds. A planned run that failed (no model) or did not run
    is named, and the verdict says on how many seeds it stands: a failed run is a result, never dropped."""
    failed = [f"{m} seed {s}" for s in seeds for m in (BASE, method) if "failed" in cells.get((budget, m, s), {})]
    missing = [f"{m} {seed_ranges([s for s in seeds if (budget, m, s) not in cells])}" for m in (BASE, method)
               if any((budget, m, s) not in cells for s in seeds)]
    out: dict = {"budget": budget, "method": method, "planned_seeds": seeds, "failed": failed, "missing": missing}
    first = next((cells[budget, m, s]["failed"] for s in seeds for m in (method, BASE)
                  if "failed" in cells.get((budget, m, s), {})), None)
    out["first_failure"] = first
    both = [s for s in seeds if all(s in points(cells, budget, m) for m in (BASE, method))]
    if len(both) < 2:
        state = "failed" if failed else "pending"
        return {**out, "verdict": f"{state}: {len(both)} of {len(seeds)} planned seeds have a model from both"}
    pick = lambda m, key: {s: v for s, v in points(cells, budget, m, key).items() if s in both}  # noqa: E731
    for key in ("val_accuracy", "test_accuracy"):
        out[key] = interval(paired_difference(pick(method, key), pick(BASE, key)))
    val = out["val_accuracy"]
    out["verdict"] = verdict(val["low"], val["mean"], val["high"])
    if len(both) < len(seeds):
        out["verdict"] += f" (on {len(both)} of the {len(seeds)} planned seeds: the interval was not sized for a " \
                          "1-point effect)"
    timed = [s for s in both if (budget, s) in times and method in times[budget, s]]
    if len(timed) > 1:  # do the two land at the same latency? method - tp_macs in the paired final loops
        ratio = {m: {s: times[budget, s][m]["ratio_p50"] for s in timed} for m in (BASE, method)}
        out["latency_ratio_difference"] = interval(paired_difference(ratio[method], ratio[BASE]))
    for m in (BASE, method):
        out[m] = method_summary(cells, times, budget, m, both)
    return out


def method_summary(cells: dict, times: dict, budget: float, method: str, seeds: list[int]) -> dict:
    cell_list = [cells[budget, method, s] for s in seeds]
    timed = [times[budget, s][method] for s in seeds if (budget, s) in times and method in times[budget, s]]
    profiled = [p for p in (profiling(budget, method, s) for s in seeds) if p]  # the run's own record
    ratios = [t["ratio_p50"] for t in timed]
    return {
        "val_mean": statistics.fmean(c["val_accuracy"] for c in cell_list),
        "test_mean": statistics.fmean(c["test_accuracy"] for c in cell_list),
        "macs_ratio_mean": statistics.fmean(c["macs_ratio"] for c in cell_list),
        "params_ratio_mean": statistics.fmean(c["params_ratio"] for c in cell_list),
        "latency_ratios": ratios, "latency_ratio_median": statistics.median(ratios) if ratios else None,
        # the spread of single rounds (2.5-97.5%) in each seed's final loop: how noisy one measurement is
        "round_ranges": [[t["ratio_low"], t["ratio_high"]] for t in timed],
        "missed_budget": [s for s in seeds if (budget, s) in times and method in times[budget, s]
                          and abs(times[budget, s][method]["ratio_p50"] / budget - 1) > MISS],
        # latency methods: seeds whose last step's closed loop ran out of re-plans and kept a plan off the band
        "loop_missed": [s for s, c in zip(seeds, cell_list)
                        if c.get("steps") and c["steps"][-1].get("budget_met") is False],
        "wall_s_mean": statistics.fmean(c["wall_s"] for c in cell_list),
        "profile_seconds_mean": statistics.fmean(p["seconds"] for p in profiled) if profiled else None,
        "profiles": profiled[0]["profiles"] if profiled else None,
    }


def plot(cells: dict, times: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for method, colour in zip(METHODS, ("tab:gray", "tab:orange", "tab:blue")):
        drawn = [(times[b, s][method]["ratio_p50"], 100 * c["val_accuracy"]) for (b, m, s), c in cells.items()
                 if m == method and "failed" not in c and method in times.get((b, s), {})]
        if drawn:
            ax.scatter(*zip(*drawn), label=method, color=colour, alpha=0.8)
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
    counted = json.loads(seeds_path.read_text()) if seeds_path.is_file() else None
    # the planned seeds: 0..n-1 from the spread (seeds.json); before it exists, the spread's own seeds
    planned = list(range(counted["n"])) if counted else [0, 1, 2]
    comparisons = [comparison(cells, times, b, planned, m) for m in METHODS if m != BASE for b in BUDGETS]
    record = {"gate": json.loads(gate_path.read_text()) if gate_path.is_file() else None, "seeds": counted,
              "dense": dense_records(), "comparisons": comparisons,
              "judged": JUDGED, "claim_holds": counted is not None and all(
                  c["verdict"] == "shown" for c in comparisons if c["method"] == JUDGED),
              "written": stamp()["date"]}
    (HERE / "results" / "latency_accuracy.json").write_text(json.dumps(record, indent=1) + "\n")
    plot(cells, times, HERE / "results" / "latency_accuracy.png")
    (HERE / "results" / "latency_accuracy.md").write_text(markdown(record))


def _interval(entry: dict, scale: float = 1.0, digits: int = 2) -> str:
    if entry["low"] is None:
        return f"{entry['mean'] * scale:+.{digits}f}"
    return (f"{entry['mean'] * scale:+.{digits}f} [{entry['low'] * scale:+.{digits}f}, "
            f"{entry['high'] * scale:+.{digits}f}]")


def _latency_words(c: dict) -> str:
    """Beside the verdict: did both land at the budget (final loops), and did they land at the same latency?"""
    if "latency_ratio_difference" not in c:
        return "not timed yet"
    missed = [f"{m} seed(s) {', '.join(map(str, c[m]['missed_budget']))}" for m in (BASE, c["method"])
              if c[m]["missed_budget"]]
    words = (f"{c['method']} − tp_macs ratio {_interval(c['latency_ratio_difference'], digits=3)}; "
             + (f"more than 5% off the budget: {'; '.join(missed)}" if missed else "both within 5% of the budget"))
    loop = c[c["method"]]["loop_missed"]
    if loop:
        words += (f"; {c['method']}'s closed loop ran out of re-plans at seed(s) {', '.join(map(str, loop))} and "
                  "kept the closest plan under the budget")
    return words


def verdict_lines(record: dict) -> list[str]:
    lines = ["| method − tp_macs | budget | seeds | val diff, points [95%] | test diff, points [95%] | "
             "verdict (validation) | measured latency (final loops) |", "|---|---:|---:|---|---|---|---|"]
    for c in record["comparisons"]:
        if "val_accuracy" not in c:
            lines.append(f"| {c['method']} | {c['budget']:.2f} | – | – | – | {c['verdict']} | – |")
            continue
        lines.append(f"| {c['method']} | {c['budget']:.2f} | {c['val_accuracy']['n']} | "
                     f"{_interval(c['val_accuracy'])} | {_interval(c['test_accuracy'])} | {c['verdict']} | "
                     f"{_latency_words(c)} |")
    holds = "holds" if record["claim_holds"] else "does not hold" if record["seeds"] else "not decided yet"
    lines += ["", f"Claim (`{record['judged']}` shown at both budgets on the planned seeds, PLAN.md's third "
                  f"amendment): **{holds}**."]
    for c in record["comparisons"]:
        if c["failed"]:
            lines.append(f"- {c['method']} at {c['budget']:.2f}: failed runs (no model): {', '.join(c['failed'])}. "
                         f"First refusal: {c['first_failure']}")
        if c["missing"]:
            lines.append(f"- {c['method']} at {c['budget']:.2f}: planned runs not run: {', '.join(c['missing'])}.")
    return lines


def method_lines(record: dict) -> list[str]:
    lines = ["| budget | method | val % | test % | latency / dense, median of seeds [each seed] | MACs | params | "
             "run (s) | profiling (s, profiles) |", "|---:|---|---:|---:|---|---:|---:|---:|---|"]
    shown: set[tuple[float, str]] = set()
    for c in record["comparisons"]:
        for method in (BASE, c["method"]):
            if method not in c or (c["budget"], method) in shown:
                continue
            shown.add((c["budget"], method))
            m = c[method]
            ratios = ", ".join(f"{r:.3f}" for r in m["latency_ratios"]) or "not timed"
            median = f"{m['latency_ratio_median']:.3f}" if m["latency_ratio_median"] else "–"
            prof = "–"
            if m["profile_seconds_mean"]:
                share = m["profile_seconds_mean"] / m["wall_s_mean"]
                prof = f"{m['profile_seconds_mean']:.1f} ({m['profiles']}; {share:.1%} of the run)"
            lines.append(f"| {c['budget']:.2f} | {method} | {100 * m['val_mean']:.2f} | {100 * m['test_mean']:.2f} | "
                         f"{median} [{ratios}] | {m['macs_ratio_mean']:.3f} | {m['params_ratio_mean']:.3f} | "
                         f"{m['wall_s_mean']:.0f} | {prof} |")
    return lines


def markdown(record: dict) -> str:
    lines = ["# Accuracy at equal measured latency: latency-aware pruning vs Torch-Pruning to a MACs target", "",
             "Written by `benchmarks/latency_accuracy.py summary` from the run files; the rule and its three "
             "amendments are in `benchmarks/PLAN.md` (issue 22), each committed before the runs it governs. ResNet-20 on "
             "Fashion-MNIST regime 2 (2,000 training images of split 0; 5,000 validation images decide; the full "
             "10,000-image test set is reported), onnxruntime fp32 on this 2-core CPU, 1 thread, batch 1. "
             "Differences are `latency − tp_macs`, paired by seed, with 95% t-intervals. Seeds vary the fine-tuning "
             "and the dense model's initialisation, not the data split: the claim covers this network, input and "
             "runtime only.", "", *verdict_lines(record), "", *method_lines(record), ""]
    lines.append("Latency: each seed's dense model and every method's model timed alternately in one loop of 300 "
                 "rounds with nothing else running; the ratio is the p50 of the per-round ratios (`timing/`).")
    if record["seeds"]:
        s = record["seeds"]
        lines.append(f"Seed count ({s['method']} − tp_macs): s_d = {s['s_d_points']:.2f} points over seeds "
                     f"{s['spread_seeds']} at {HARD} "
                     f"→ n = {s['n']} (PLAN.md).")
    if record["gate"]:
        g = record["gate"]
        lines.append(f"Gate: per-call overhead {min(g['overhead_share']):.1%}–{max(g['overhead_share']):.1%} of "
                     f"the dense latency ({'passes' if g['passes'] else 'fails'}; the rule asks < 20%).")
    lines += ["", "Dense models (regime 2's gate recipe, retrained here by the same code):", "",
              "| seed | epochs | val | test | train − val | same sha256 as regime 2's |",
              "|---:|---:|---:|---:|---:|---|"]
    for d in record["dense"]:
        lines.append(f"| {d['seed']} | {d['epochs']} | {d['val_accuracy']:.4f} | {d['test_accuracy']:.4f} | "
                     f"{d['train_val_gap']:.4f} | {'yes' if d['same_as_regime2'] else 'no'} |")
    lines += ["", "![accuracy against measured latency](latency_accuracy.png)", ""]
    return "\n".join(lines)
