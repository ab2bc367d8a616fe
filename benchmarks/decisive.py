"""Tables (b)-(g), redone in regime 2: iterative pruning variants, paired by seed (benchmarks/PLAN.md).

    python benchmarks/decisive.py --tables e --sizes 0.1,0.05 [--seeds 0,1,2] [--workers 2]
    python benchmarks/decisive.py --tables f --sizes 0.1,0.05   # exploratory (PLAN.md, table (f))
    python benchmarks/decisive.py --tables g --sizes 0.1,0.05   # confirmation on seeds 3-5 (PLAN.md)
    python benchmarks/decisive.py --summary-only

Every run is `edgecomp compress` from the seed's gate dense model of regime 2 (dense.epochs 0), 3 pruning
steps with linear MACs targets to the final size, 15 fine-tune epochs per step. M_d and M_s, the best
magnitudes of table (a) at 100% and 5% by validation mean, come from benchmarks/results/study_converged.json.
One JSON per finished run under benchmarks/results/converged/<regime>/decisive/ (a killed job resumes
there; compress resumes a half-finished run from its own checkpoints under benchmarks/runs/decisive/).
The summary, benchmarks/results/decisive.json, holds the paired differences (validation decides, test is
reported beside) for every comparison the plan names.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

HERE = Path(__file__).resolve().parent
REGIME = "fmnist_regime_2k"
RECIPE = HERE / "recipes" / f"{REGIME}.yaml"
CELLS = HERE / "results" / "converged" / REGIME / "decisive"
RUNS = HERE / "runs" / "decisive"
STEPS, EPOCHS_PER_STEP, KD = 3, 15, 0.5
STRONG = 10.0  # the auxiliary strong view (PLAN.md, amendment after table (a): the default would equal M_d = 0)

# table -> (variants it needs, comparisons "a - b" it reports)
TABLES = {
    "b": (["const_dense", "const_small", "linear", "reversed"],
          [("linear", "const_dense"), ("linear", "const_small"), ("linear", "reversed"),
           ("const_small", "const_dense")]),
    "c": (["linear", "rep", "rep_trunk", "heads"],
          [("rep", "linear"), ("rep_trunk", "linear"), ("heads", "linear")]),
    "d": (["linear", "kd", "teacher_drop", "teacher_wrong"],
          [("kd", "linear"), ("teacher_drop", "linear"), ("teacher_wrong", "linear"),
           ("teacher_drop", "teacher_wrong")]),
    "e": (["tp_baseline", "full"], [("full", "tp_baseline")]),
    # exploratory, chosen after (c)-(e) (PLAN.md, table (f)): the weak view's own cost, and KD on crop + flip
    "f": (["tp_baseline", "linear", "kd_plain"], [("linear", "tp_baseline"), ("kd_plain", "tp_baseline")]),
}

# PLAN.md, confirmation: seeds 0-2 choose the candidates, new seeds 3-5 judge them (table "g")
SELECTION_SEEDS, CONFIRMATION_SEEDS = (0, 1, 2), (3, 4, 5)
MECHANISMS = ["kd", "kd_plain", "rep", "rep_trunk", "heads", "teacher_drop", "teacher_wrong", "full"]
CHOOSING_SIZE, CANDIDATES = 0.05, 2


def load_cells() -> dict[tuple[float, str, int], dict]:
    cells = {}
    for path in CELLS.glob("s[0-9]*_seed*.json"):  # one file per run (confirmation.json is not one)
        cell = json.loads(path.read_text())
        cells[float(cell["size"]), cell["variant"], int(cell["seed"])] = cell
    return cells


def confirmation_candidates(cells: dict) -> list[str]:
    """The mechanisms with the highest validation mean at 5% on seeds 0-2, above tp_baseline's (PLAN.md)."""
    def mean(name: str) -> float | None:
        found = [cells[CHOOSING_SIZE, name, s]["val_accuracy"] for s in SELECTION_SEEDS
                 if (CHOOSING_SIZE, name, s) in cells]
        return statistics.fmean(found) if len(found) == len(SELECTION_SEEDS) else None

    base = mean("tp_baseline")
    if base is None:  # tables (e) and (f) choose; nothing to confirm before they ran
        return []
    above = [name for name in MECHANISMS if (mean(name) or 0.0) > base]
    return sorted(above, key=mean, reverse=True)[:CANDIDATES]


def confirmation(cells: dict) -> dict:
    """The candidates, chosen once and then frozen in CELLS/confirmation.json, and the gated new seeds."""
    path = CELLS / "confirmation.json"
    if path.is_file():
        return json.loads(path.read_text())
    missing = [f"{name} seed {s}" for name in ["tp_baseline", *MECHANISMS] for s in SELECTION_SEEDS
               if (CHOOSING_SIZE, name, s) not in cells]
    if missing:
        raise SystemExit(f"confirmation: candidates are chosen only once every mechanism ran at 5% on seeds 0-2; "
                         f"missing: {', '.join(missing)}")
    gates_path = CELLS.parent / "gates.json"
    gates = json.loads(gates_path.read_text()) if gates_path.is_file() else {}
    if any(str(s) not in gates for s in CONFIRMATION_SEEDS):
        raise SystemExit("confirmation: seeds 3-5 have no gate record; run "
                         "`python benchmarks/study_converged.py --seeds 3,4,5 --gate-only` first")
    chosen = {"candidates": confirmation_candidates(cells), "selection_seeds": list(SELECTION_SEEDS),
              "seeds": [s for s in CONFIRMATION_SEEDS if gates[str(s)]["passes"]],
              "dropped_seeds": [s for s in CONFIRMATION_SEEDS if not gates[str(s)]["passes"]]}
    path.write_text(json.dumps(chosen, indent=1) + "\n")
    return chosen


def best_magnitudes() -> tuple[float, float]:
    """(M_d, M_s): table (a)'s best magnitude at 100% and at 5% of the MACs, by validation mean."""
    table = json.loads((HERE / "results" / "study_converged.json").read_text())["table"]
    return float(table["1.0"]["best_m_by_val"]), float(table["0.05"]["best_m_by_val"])


def step_ratios(final: float) -> list[float]:
    """prune.schedule linear: the MACs target of each of the STEPS steps."""
    return [1.0 - (1.0 - final) * step / STEPS for step in range(1, STEPS + 1)]


def variant_sets(name: str, final: float, m_dense: float, m_small: float) -> list[str]:
    """The recipe overrides of one variant (PLAN.md, regime 2)."""
    linear = ["augment.schedule.kind=linear", f"augment.schedule.dense={m_dense}", f"augment.schedule.min={m_small}"]
    teacher = ["augment.schedule.kind=teacher", f"augment.schedule.dense={m_dense}", "teacher.difficulty.mode=weight"]
    per_step = [m_small + (m_dense - m_small) * s for s in step_ratios(final)]
    baseline = ["augment.policy=none", "augment.schedule.kind=constant", "augment.schedule.dense=0"]
    table = {
        "tp_baseline": baseline,
        "kd_plain": [*baseline, f"teacher.kd_weight={KD}"],
        "const_dense": ["augment.schedule.kind=constant", f"augment.schedule.dense={m_dense}"],
        "const_small": ["augment.schedule.kind=constant", f"augment.schedule.dense={m_small}"],
        "linear": linear,
        "reversed": ["augment.schedule.kind=steps", f"augment.schedule.dense={m_dense}",
                     "augment.schedule.values=[" + ",".join(f"{m:g}" for m in reversed(per_step)) + "]"],
        "rep": [*linear, "aux.kind=rep", f"aux.strong_magnitude={STRONG}"],
        "rep_trunk": [*linear, "aux.kind=rep", "aux.rep_trunk=true", f"aux.strong_magnitude={STRONG}"],
        "heads": [*linear, "aux.kind=heads", f"aux.strong_magnitude={STRONG}"],
        "kd": [*linear, f"teacher.kd_weight={KD}"],
        "teacher_drop": [*teacher, "teacher.difficulty.criterion=drop"],
        "teacher_wrong": [*teacher, "teacher.difficulty.criterion=wrong"],
        "full": [*teacher, "teacher.difficulty.criterion=drop", f"teacher.kd_weight={KD}", "aux.kind=rep",
                 f"aux.strong_magnitude={STRONG}"],
    }
    return table[name]


def cell_path(final: float, name: str, seed: int) -> Path:
    return CELLS / f"s{final:.3f}_{name}_seed{seed}.json"


def run_one(final: float, name: str, seed: int, m_dense: float, m_small: float) -> dict:
    """One compress run in a worker process (one torch thread); returns what the cell file records."""
    import time

    import torch

    torch.set_num_threads(1)
    import edgecomp
    from edgecomp.core.console import console
    from edgecomp.core.recipe import load_recipe

    console.quiet = True
    dense = HERE / "results" / "converged" / REGIME / f"dense-s{seed}.pt"
    sets = [f"seed={seed}", f"dense.weights={dense}", "dense.epochs=0", f"prune.steps={STEPS}",
            f"prune.target.macs={final}", f"finetune.epochs_per_step={EPOCHS_PER_STEP}",
            *variant_sets(name, final, m_dense, m_small)]
    start = time.perf_counter()
    result = edgecomp.compress(load_recipe(str(RECIPE), sets), out=RUNS / f"s{final:.3f}" / f"{name}-s{seed}",
                               resume=True)
    final_row = result.final
    return {"size": final, "variant": name, "seed": seed, "sets": sets, "wall_s": round(time.perf_counter() - start, 1),
            "val_accuracy": final_row["accuracy"], "test_accuracy": final_row["test_accuracy"],
            "macs_ratio": final_row["macs_ratio"], "magnitudes": [r.get("magnitude") for r in result.rows],
            "dense_val_accuracy": result.dense["accuracy"], "dense_test_accuracy": result.dense["test_accuracy"]}


def summarise(sizes: list[float], seeds: list[int]) -> dict:
    cells = load_cells()
    m_dense, m_small = best_magnitudes()
    out = {"recipe": str(RECIPE.relative_to(HERE.parent)), "steps": STEPS, "epochs_per_step": EPOCHS_PER_STEP,
           "strong_magnitude": STRONG, "m_dense": m_dense, "m_small": m_small, "seeds": seeds, "runs": {},
           "comparisons": []}
    for (size, name, seed), cell in sorted(cells.items()):
        out["runs"].setdefault(f"{size:g}", {}).setdefault(name, {})[str(seed)] = {
            k: cell[k] for k in ("val_accuracy", "test_accuracy", "macs_ratio", "magnitudes", "wall_s")}
    chosen_path = CELLS / "confirmation.json"
    chosen = json.loads(chosen_path.read_text()) if chosen_path.is_file() else None  # frozen when (g) started
    out["confirmation"] = chosen
    confirm = [(c, "tp_baseline") for c in (chosen or {}).get("candidates", [])]
    groups = [*((t, comparisons, seeds) for t, (_, comparisons) in TABLES.items())]
    if chosen:
        pooled_seeds = (*chosen["selection_seeds"], *chosen["seeds"])
        groups += [("g", confirm, chosen["seeds"]), ("g_pooled", confirm, pooled_seeds)]
    for table, comparisons, group_seeds in groups:
        for size in sizes:
            for a, b in comparisons:
                entry = compare(cells, size, a, b, group_seeds)
                if entry:
                    out["comparisons"].append({"table": table, **entry})
    judged = {(c["size"], c["a"]) for c in out["comparisons"] if c["table"] == "g"}  # pooled only beside a verdict
    out["comparisons"] = [c for c in out["comparisons"] if c["table"] != "g_pooled" or (c["size"], c["a"]) in judged]
    return out


def compare(cells: dict, size: float, a: str, b: str, seeds) -> dict | None:
    """a - b paired over the seeds both have (None if they share none)."""
    from paired_stats import paired_difference

    got = lambda v, key: {s: cells[size, v, s][key] for s in seeds if (size, v, s) in cells}  # noqa: E731
    if not set(got(a, "val_accuracy")) & set(got(b, "val_accuracy")):
        return None
    return {"size": size, "a": a, "b": b,
            "val": paired_difference(got(a, "val_accuracy"), got(b, "val_accuracy")).as_dict(),
            "test": paired_difference(got(a, "test_accuracy"), got(b, "test_accuracy")).as_dict()}


def runs_to_do(tables: list[str], sizes: list[float], seeds: list[int], variants: str | None,
               vacuous_b: bool) -> list[tuple[float, str, int]]:
    """(size, variant, seed) of every run the tables need that has no cell file yet, in table order."""
    todo = []
    for table in tables:
        if table == "b" and vacuous_b:  # PLAN.md: M_d = M_s makes every schedule the same constant
            print("table (b) is vacuous: M_d = M_s; not run", flush=True)
            continue
        if table != "g":
            names, table_seeds = TABLES[table][0], seeds
        else:  # PLAN.md, confirmation: candidates from seeds 0-2, judged on the new seeds that pass their gate
            chosen = confirmation(load_cells())
            print(f"confirmation candidates: {', '.join(chosen['candidates']) or 'none above tp_baseline'}; "
                  f"seeds {chosen['seeds']}", flush=True)
            names = ["tp_baseline", *chosen["candidates"]] if chosen["candidates"] else []
            table_seeds = chosen["seeds"]
        for size in sizes:
            for name in names:
                if variants and name not in variants.split(","):
                    continue
                for seed in table_seeds:
                    if (size, name, seed) not in todo and not cell_path(size, name, seed).is_file():
                        todo.append((size, name, seed))
    return todo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tables", default="e,b,c,d",
                        help="tables to run, in order (b, c, d, e; f: exploratory; g: confirmation on seeds 3-5)")
    parser.add_argument("--sizes", default="0.1,0.05", help="final MACs ratios")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--variants", help="only these variants of the tables (comma-separated); default all")
    parser.add_argument("--summary-only", action="store_true")
    args = parser.parse_args()
    sizes, seeds = [float(v) for v in args.sizes.split(",")], [int(v) for v in args.seeds.split(",")]
    if not args.summary_only:
        m_dense, m_small = best_magnitudes()
        todo = runs_to_do(args.tables.split(","), sizes, seeds, args.variants, m_dense == m_small)
        print(f"M_d = {m_dense:g}, M_s = {m_small:g}; {len(todo)} runs to do", flush=True)
        CELLS.mkdir(parents=True, exist_ok=True)
        with ProcessPoolExecutor(args.workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [pool.submit(run_one, size, name, seed, m_dense, m_small) for size, name, seed in todo]
            for future in as_completed(futures):
                cell = future.result()
                cell_path(cell["size"], cell["variant"], cell["seed"]).write_text(json.dumps(cell, indent=1) + "\n")
                print(f"{cell['variant']} s={cell['size']:g} seed {cell['seed']}: val {cell['val_accuracy']:.4f} "
                      f"test {cell['test_accuracy']:.4f} ({cell['wall_s']:.0f} s)", flush=True)
    summary = summarise(sizes, seeds)
    (HERE / "results" / "decisive.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(f"{len(summary['comparisons'])} comparisons: benchmarks/results/decisive.json")


if __name__ == "__main__":
    main()
