"""The verdicts of the latency-model rules (benchmarks/PLAN.md, issue 21), from the cell files.

    .venv/bin/python benchmarks/latency_rule_page.py widths   # "profiles on mixed alignments"
    .venv/bin/python benchmarks/latency_rule_page.py probe    # "the convolutions' step measured by whole-model timing"
    .venv/bin/python benchmarks/latency_rule_page.py probe2   # "the step probe, second version"
    .venv/bin/python benchmarks/latency_rule_page.py probe3   # "the step probe as a floor"
    .venv/bin/python benchmarks/latency_rule_page.py regime   # "the per-layer lines fitted in the regime plans run in"
    .venv/bin/python benchmarks/latency_rule_page.py nudge    # "the closed loop re-plans instead of re-timing ..."

Cells: results/latency_<rule>/r<k>/<setting>/ (run by `latency_pruning.py ... --out ...`, 3 repeats).
Per cell-run d = tp_macs ratio - latency ratio in the final loop (how much of the dense latency the latency
model saves against Torch-Pruning at the same MACs). The rule, over the 224-px cell-runs: the new setting
becomes the default if its mean d is higher than the old one's and it has at least as many final ratios within
5% under the budget. Writes results/latency_<rule>.{json,md}.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

from latency_cells import first_miss
from paired_stats import paired_difference

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
AT_224 = ("resnet18", "mobilenet_v2")
RULES = {  # rule -> (old setting, new setting, the page's title, the rule's heading in PLAN.md)
    "widths": ("drawn", "mixed", "The latency model's profiled copies: counts as drawn against counts on mixed "
               "alignments", "profiles on mixed alignments"),
    "probe": ("shipped", "probe", "The convolutions' step: fitted from the profiles (shipped) against measured by "
              "whole-model timing (probe)", "the convolutions' step measured by whole-model timing"),
    "probe2": ("shipped", "probe", "The convolutions' step: fitted from the profiles (shipped) against measured by "
               "padding counts up the ladder (probe, second version)", "the step probe, second version"),
    "probe3": ("shipped", "probe", "The convolutions' step: fitted from the profiles (shipped) against no finer than "
               "the second probe measures (probe as a floor)", "the step probe as a floor"),
    "regime": ("shipped", "probed", "The latency model's profiled copies: counts as drawn (shipped) against counts on "
               "the step the second probe measures (probed)", "the per-layer lines fitted in the regime plans run in"),
    "nudge": ("shipped", "nudge", "The closed loop: a re-plan that repeats a timed plan timed again (shipped) against "
              "nudged to new channels (nudge)", "the closed loop re-plans instead of re-timing a plan it has timed"),
}


def rows(rule: str) -> list[dict]:
    found = []
    for path in sorted((RESULTS / f"latency_{rule}").glob("r*/*/*.json")):
        cell, repeat, setting = json.loads(path.read_text()), int(path.parent.parent.name[1:]), path.parent.name
        lat, tp = cell["latency"], cell["tp_macs"]
        found.append({"repeat": repeat, "setting": setting, "arch": cell["arch"], "budget": cell["budget"],
                      "ratio": lat["ratio_p50"], "within_5pct": lat["within_5pct"], "macs_ratio": lat["macs_ratio"],
                      "tp_ratio": tp["ratio_p50"], "d": tp["ratio_p50"] - lat["ratio_p50"],
                      "speedup_per_macs": lat["speedup_per_macs_reduction"], "first_miss": first_miss(cell),
                      "plans": len(lat["loop_attempts"]), "steps": cell["latency_model"]["steps"],
                      "profile_seconds": cell["latency_model"]["profile_seconds"],
                      "probe_step": cell["latency_model"].get("probe_step")})
    return found


D_MARGIN = {"nudge": 0.01}  # rules asking only that the mean d is not lower by more than this (PLAN.md); others: higher


def verdict(found: list[dict], rule: str) -> dict:
    old, new = RULES[rule][:2]
    wide = [r for r in found if r["arch"] in AT_224]
    by = {w: {(r["repeat"], r["arch"], r["budget"]): r for r in wide if r["setting"] == w} for w in (old, new)}
    diff = paired_difference({k: r["d"] for k, r in by[new].items()}, {k: r["d"] for k, r in by[old].items()})
    per = {w: {"cell_runs_224": len(by[w]), "mean_d": statistics.fmean(r["d"] for r in by[w].values()),
               "within_5pct_224": sum(r["within_5pct"] for r in by[w].values()),
               "median_first_miss": statistics.median(r["first_miss"] for r in by[w].values())} for w in (old, new)}
    margin = D_MARGIN.get(rule)
    higher = per[new]["mean_d"] > per[old]["mean_d"] if margin is None \
        else per[new]["mean_d"] >= per[old]["mean_d"] - margin
    band = per[new]["within_5pct_224"] >= per[old]["within_5pct_224"]
    repeatable = {}
    for w in (old, new):
        for arch in sorted({r["arch"] for r in found}):
            seen = {json.dumps(r["steps"], sort_keys=True) for r in found if r["setting"] == w and r["arch"] == arch}
            repeatable[f"{arch} {w}"] = len(seen) == 1
    return {"per_setting": per, "new_minus_old_d": {"mean": diff.mean, "low": diff.low, "high": diff.high,
                                                    "pairs": diff.n},
            "mean_d_higher" if margin is None else f"mean_d_not_lower_by_more_than_{margin}": higher,
            "band_not_worse": band, "steps_repeatable": repeatable,
            "decision": f"the default becomes {new}" if higher and band else f"the default stays {old}"}


def d_question(rule: str, new: str) -> str:
    margin = D_MARGIN.get(rule)
    return f"Mean d higher with {new}" if margin is None else f"Mean d with {new} not lower by more than {margin}"


def d_ok(result: dict, rule: str) -> bool:
    margin = D_MARGIN.get(rule)
    return result["mean_d_higher" if margin is None else f"mean_d_not_lower_by_more_than_{margin}"]


def markdown(found: list[dict], result: dict, rule: str) -> list[str]:
    old, new, title, heading = RULES[rule]
    per, diff = result["per_setting"], result["new_minus_old_d"]
    lines = [f"# {title}", "",
             f"Written by `benchmarks/latency_rule_page.py {rule}` from the cell files; the rule is in "
             f"`benchmarks/PLAN.md` (issue 21, \"{heading}\"), registered before the repeats ran. d = tp_macs ratio − "
             "latency ratio in the final loop: the share of the dense latency the latency model saves against "
             "Torch-Pruning at the same MACs (higher is better).", "",
             "| setting | 224-px cell-runs | mean d | within 5% | median first-plan miss |", "|---|---:|---:|---:|---:|"]
    for w in (old, new):
        v = per[w]
        lines.append(f"| {w} | {v['cell_runs_224']} | {v['mean_d']:+.3f} | {v['within_5pct_224']} of "
                     f"{v['cell_runs_224']} | {v['median_first_miss']:.1%} |")
    lines += ["", f"{new} − {old}, mean d paired by repeat and cell: {diff['mean']:+.3f} [{diff['low']:+.3f}, "
              f"{diff['high']:+.3f}] (95% t-interval, {diff['pairs']} pairs). {d_question(rule, new)}: "
              f"{'yes' if d_ok(result, rule) else 'no'}; within 5% at least as often: "
              f"{'yes' if result['band_not_worse'] else 'no'}. So {result['decision']}.", "",
              "Steps found the same in every repeat: " + ", ".join(
                  f"{k} {'yes' if v else 'no'}" for k, v in result["steps_repeatable"].items()) + ".", "",
              "| network | budget | repeat | setting | final ratio | within 5% | MACs ratio | tp_macs ratio | d | "
              "speed-up ÷ MACs | first-plan miss | plans | channel steps |",
              "|---|---:|---:|---|---:|:--|---:|---:|---:|---:|---:|---:|---|"]
    for r in sorted(found, key=lambda r: (r["arch"], r["budget"], r["repeat"], r["setting"])):
        steps = ", ".join(f"{k} {v}" for k, v in r["steps"].items())
        lines.append(f"| {r['arch']} | {r['budget']:.2f} | {r['repeat']} | {r['setting']} | {r['ratio']:.3f} | "
                     f"{'yes' if r['within_5pct'] else 'no'} | {r['macs_ratio']:.3f} | {r['tp_ratio']:.3f} | "
                     f"{r['d']:+.3f} | {r['speedup_per_macs']:.2f} | {r['first_miss']:.1%} | {r['plans']} | "
                     f"{steps} |")
    return lines


def main() -> None:
    rule = sys.argv[1] if len(sys.argv) > 1 else ""
    if rule not in RULES:
        sys.exit(f"usage: latency_rule_page.py {{{'|'.join(RULES)}}}")
    found = rows(rule)
    result = verdict(found, rule)
    (RESULTS / f"latency_{rule}.json").write_text(json.dumps({"rows": found, **result}, indent=1))
    lines = markdown(found, result, rule)
    (RESULTS / f"latency_{rule}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
