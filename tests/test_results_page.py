"""The results page applies PLAN.md's rules mechanically (finding A, the decisive tables): check them on worked data."""

import pytest
from conftest import load_benchmark


@pytest.fixture(scope="module")
def page():
    return load_benchmark("results_page")


def grid(page, best: dict[float, float], gain: float, noise=(0.0, 0.001, -0.001)) -> dict:
    """Cells whose accuracy peaks at best[size] by `gain` (per-seed offsets `noise`), else 0.80."""
    cells = {}
    for seed, offset in zip(page.SEEDS, noise):
        for size in page.SIZES:
            for m in page.MAGNITUDES:
                acc = 0.80 + offset + (gain if m == best[size] else 0.0)
                cells[seed, size, m] = {"val_accuracy": acc, "test_accuracy": acc}
    return cells


def verdict(lines: list[str]) -> str:
    return next(line for line in lines if line.startswith("- Finding A"))


def test_a_holds_when_the_best_magnitude_falls_with_size_and_the_small_model_gains(page):
    cells = grid(page, {1.0: 10.0, 0.25: 10.0, 0.1: 5.0, 0.05: 0.0}, gain=0.02)
    assert page.best_magnitude(cells, 0.05) == 0.0 and page.best_magnitude(cells, 1.0) == 10.0
    assert "**holds**" in verdict(page.finding_a_verdict(cells))


def test_a_fails_when_the_small_model_prefers_as_much_augmentation(page):
    cells = grid(page, {1.0: 5.0, 0.25: 5.0, 0.1: 5.0, 0.05: 10.0}, gain=0.02)
    assert "**fails**" in verdict(page.finding_a_verdict(cells))


def test_a_is_not_shown_when_the_ordering_holds_but_the_seeds_disagree(page):
    cells = grid(page, {1.0: 10.0, 0.25: 10.0, 0.1: 5.0, 0.05: 0.0}, gain=0.0005)
    for seed in page.SEEDS:  # seed 1 prefers the dense magnitude at 5% on test: the interval spans zero
        cells[seed, 0.05, 10.0]["test_accuracy"] += 0.004 if seed == 1 else 0.0
    assert "**not shown**" in verdict(page.finding_a_verdict(cells))


def test_ties_go_to_the_smaller_magnitude(page):
    cells = grid(page, {1.0: 10.0, 0.25: 10.0, 0.1: 5.0, 0.05: 0.0}, gain=0.0)
    assert all(page.best_magnitude(cells, size) == 0.0 for size in page.SIZES)
    assert "**fails**" in verdict(page.finding_a_verdict(cells))


def comparison(a: str, b: str, size: float, gains: tuple[float, ...]) -> dict:
    """A decisive.json comparison whose seeds gain `gains` (accuracy) for a over b on validation."""
    from paired_stats import paired_difference

    base = {seed: 0.80 + 0.01 * seed for seed in range(len(gains))}
    diff = paired_difference({s: base[s] + g for s, g in enumerate(gains)}, base).as_dict()
    return {"a": a, "b": b, "size": size, "val": diff, "test": diff}


CLEAR, NOISY = (0.010, 0.012, 0.011), (0.02, -0.015, 0.004)


@pytest.mark.parametrize("gains, sizes_run, status", [
    ({0.1: CLEAR, 0.05: CLEAR}, (0.1, 0.05), "→ a default"),
    ({0.1: NOISY, 0.05: CLEAR}, (0.1, 0.05), "→ **not** a default"),
    ({0.05: CLEAR}, (0.05,), "→ **passes where it ran**"),
    ({0.05: NOISY}, (0.05,), "→ **not** a default"),
])
def test_a_mechanism_becomes_a_default_only_above_zero_at_both_sizes(page, gains, sizes_run, status):
    rows = [comparison("kd", "linear", size, gains[size]) for size in sizes_run]
    (line,) = page.decisive_verdicts("d", rows, [0.1, 0.05])
    assert status in line


def test_the_full_recipe_goal_needs_a_point_above_zero_at_every_size(page):
    small = (0.004, 0.005, 0.006)  # above zero but under one point
    met = [comparison("full", "tp_baseline", size, CLEAR) for size in (0.1, 0.05)]
    assert "**met**" in page.decisive_verdicts("e", met, [0.1, 0.05])[0]
    short = [comparison("full", "tp_baseline", 0.1, CLEAR), comparison("full", "tp_baseline", 0.05, small)]
    assert "**not met**" in page.decisive_verdicts("e", short, [0.1, 0.05])[0]
    assert "**not met**" in page.decisive_verdicts("e", met[:1], [0.1, 0.05])[0]  # one size run is not both


def test_the_weak_views_own_cost_is_reported_not_decided(page):
    rows = [comparison("linear", "tp_baseline", 0.05, tuple(-g for g in CLEAR)),
            comparison("linear", "tp_baseline", 0.1, NOISY)]
    (line,) = page.decisive_verdicts("f", rows, [0.1, 0.05])
    assert "costs at 0.05" in line and "default" not in line


@pytest.mark.parametrize("gains, status", [
    ({0.1: CLEAR, 0.05: CLEAR}, "**confirmed: a default**"),
    ({0.1: NOISY, 0.05: CLEAR}, "**confirmed at 5% only: worth it there**"),
    ({0.1: CLEAR, 0.05: NOISY}, "**not confirmed**"),
    ({0.1: NOISY, 0.05: NOISY}, "**not confirmed**"),
])
def test_confirmation_on_new_seeds(page, gains, status):
    rows = [comparison("kd_plain", "tp_baseline", size, gains[size]) for size in (0.1, 0.05)]
    (line,) = page.decisive_verdicts("g", rows, [0.1, 0.05])
    assert status in line


def test_confirmation_is_pending_until_every_size_has_every_new_seed(page):
    one_size = [comparison("kd_plain", "tp_baseline", 0.05, CLEAR)]
    assert "**pending**" in page.decisive_verdicts("g", one_size, [0.1, 0.05], seeds_needed=3)[0]
    two_seeds = [comparison("kd_plain", "tp_baseline", size, CLEAR[:2]) for size in (0.1, 0.05)]
    assert "**pending**" in page.decisive_verdicts("g", two_seeds, [0.1, 0.05], seeds_needed=3)[0]


def test_exploratory_table_only_proposes_for_the_confirmation(page):
    rows = [comparison("kd_plain", "tp_baseline", size, CLEAR) for size in (0.1, 0.05)]
    (line,) = page.decisive_verdicts("f", rows, [0.1, 0.05])
    assert "a default only if (g) confirms it" in line


def test_the_headline_counts_confirmations_and_waits_for_pending_ones(page):
    done = [comparison("kd_plain", "tp_baseline", size, CLEAR) for size in (0.1, 0.05)]
    failed = [comparison("rep_trunk", "tp_baseline", size, NOISY) for size in (0.1, 0.05)]
    data = {"confirmation": {"seeds": [3, 4, 5]}, "comparisons": [{"table": "g", **c} for c in done + failed]}
    assert "1 of 2 candidates beat" in page.confirmation_status(data)
    data["comparisons"] = [{"table": "g", **c} for c in failed]
    assert "0 of 1 candidates" in page.confirmation_status(data) and "baseline's settings" in page.confirmation_status(data)
    data["comparisons"] = [{"table": "g", **done[1]}]  # 10% not run yet
    assert "still running" in page.confirmation_status(data)
    assert page.confirmation_status(None) == ""


def close_call_at_dense_size(page, leads: tuple[float, ...]) -> dict:
    """M = 0 best everywhere by 2 points, except at 100% where it leads M = 5 by `leads` per seed (validation)."""
    cells = grid(page, {size: 0.0 for size in page.SIZES}, gain=0.02)
    for seed, lead in zip(page.SEEDS, leads):
        cells[seed, 1.0, 5.0]["val_accuracy"] = cells[seed, 1.0, 0.0]["val_accuracy"] - lead
    return cells


def test_a_verdict_on_a_margin_smaller_than_the_seed_spread_is_not_supported_in_this_regime(page):
    # M = 0 leads M = 5 at 100% by 0.03 points on the mean, but two of three seeds prefer M = 5 (as in table a):
    # had M = 5 won there, the same rule would not say "fails"
    cells = close_call_at_dense_size(page, (0.004, -0.003, -0.0001))
    line = verdict(page.finding_a_verdict(cells))
    assert "**not supported in this regime**" in line and "**fails**" not in line
    assert "leads M = 5 by 0.03 points" in line and "2 of 3 seeds prefer M = 5" in line
    assert page.finding_a_status(cells) == "not supported in this regime"


def test_a_fails_when_the_deciding_margin_exceeds_the_seed_spread(page):
    cells = close_call_at_dense_size(page, (0.004, 0.005, 0.006))  # every seed prefers M = 0, spread 0.1 points
    assert "**fails**" in verdict(page.finding_a_verdict(cells))
    assert page.finding_a_status(cells) == "fails"


def test_a_cost_ordered_by_size_only_in_its_means_is_not_called_ordered(page):
    cells = grid(page, {size: 0.0 for size in page.SIZES}, gain=0.0)
    spread = (0.01, -0.01, 0.0)  # per-seed noise wider than the steps between the mean costs
    for size, cost in zip(page.SIZES, (0.002, 0.004, 0.006, 0.008)):
        for seed, noise in zip(page.SEEDS, spread):
            cells[seed, size, 15.0]["val_accuracy"] -= cost + noise
    text = "\n".join(page.reading(cells))
    assert "M = 15: mean difference -0.20, -0.40, -0.60, -0.80" in text
    assert "the intervals overlap, so the ordering is not shown" in text
    assert "hurts more the smaller" not in text and "less augmentation is better everywhere" not in text


def test_every_decisive_table_names_what_its_figures_are_measured_against(page):
    rows = [comparison("kd", "linear", 0.05, CLEAR), comparison("kd_plain", "tp_baseline", 0.05, CLEAR)]
    line = page.compared_with(rows)
    assert "`linear`, RandAugment at M = 0 (not the crop + flip baseline)" in line
    assert "`tp_baseline`, plain Torch-Pruning with crop + flip" in line


def commit(repo, files: dict[str, str], when: str) -> None:
    import os
    import subprocess

    for name, text in files.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text)
    env = {**os.environ, "GIT_AUTHOR_DATE": when, "GIT_COMMITTER_DATE": when, "GIT_AUTHOR_NAME": "t",
           "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    subprocess.run(["git", "-C", str(repo), "add", "."], check=True, env=env)
    subprocess.run(["git", "-C", str(repo), "commit", "-qm", when], check=True, env=env)


@pytest.mark.parametrize("order, shows", [
    ("rule first", "the rule, 30 min before the results"),
    ("together", "**the same commit**: the history cannot show the rule came first"),
    ("results first", "**after** its results: the history cannot show the rule came first"),
])
def test_rule_timing_is_what_git_shows_not_what_the_plan_says(page, tmp_path, order, shows):
    import subprocess

    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    rule = {"PLAN.md": "# Plan\n\n## Rule (x), written 07:00 before its runs\n"}
    runs = {"results/x_seed0.json": "{}"}
    if order == "rule first":
        commit(tmp_path, rule, "2026-11-29T07:30:00+00:00")
        commit(tmp_path, runs, "2026-11-29T08:00:00+00:00")
    elif order == "together":
        commit(tmp_path, {**rule, **runs}, "2026-11-29T08:00:00+00:00")
    else:
        commit(tmp_path, runs, "2026-11-29T07:30:00+00:00")
        commit(tmp_path, rule, "2026-11-29T08:00:00+00:00")
    table = page.rule_history(tmp_path, [("x", "## Rule (x)", ["results/x_seed*.json"])], plan="PLAN.md")
    assert table[-1].endswith(f"| {shows} |"), table[-1]
    assert "Rule (x), written 07:00 before its runs" in table[-1]  # the text's own claim, shown beside the history


def test_rule_timing_without_history_says_so(page, tmp_path):
    lines = page.rule_history(tmp_path, [("x", "## Rule (x)", ["results/*.json"])], plan="PLAN.md")
    assert len(lines) == 1 and "history is not available" in lines[0]


def test_a_rule_whose_results_are_not_committed_yet_says_so(page, tmp_path):
    import subprocess

    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    commit(tmp_path, {"PLAN.md": "# Plan\n\n## Rule (x)\n"}, "2026-11-29T07:30:00+00:00")
    table = page.rule_history(tmp_path, [("x", "## Rule (x)", ["results/*.json"])], plan="PLAN.md")
    assert table[-1].endswith("| none yet | no results committed yet |"), table


def test_latency_verdicts_say_when_the_latency_model_was_not_faster():
    page = load_benchmark("results_page")

    def cell(lat, tp, within=True, per_macs=0.9):
        return {"arch": "net", "budget": 0.5,
                "latency": {"ratio_p50": lat, "ratio_low": lat - 0.01, "ratio_high": lat + 0.01,
                            "within_5pct": within, "speedup_per_macs_reduction": per_macs},
                "tp_macs": {"ratio_p50": tp, "ratio_low": tp - 0.1, "ratio_high": tp + 0.1,
                            "speedup_per_macs_reduction": 0.8}}

    ahead, behind = page.latency_verdicts([cell(0.45, 0.5), cell(0.5, 0.45, within=False, per_macs=1.1)])
    assert "ran 10% faster than Torch-Pruning" in ahead and "goal 1.0: not reached" in ahead
    assert "was **not** faster" in behind and "missed the 5% band" in behind and "goal 1.0: reached" in behind
    assert all("One run; the per-round ranges of the two overlap" in line for line in (ahead, behind))
    (apart,) = page.latency_verdicts([cell(0.2, 0.5)])
    assert "do not overlap" in apart
    (named,) = page.latency_verdicts([{**cell(0.45, 0.5), "latency_model": {"calibration": 3, "max_step": 4}}])
    assert named.startswith("net (calibration 3, max_step 4) at 0.50 of the dense latency")


def test_small_model_verdict_waits_for_the_seeds_the_rule_asks_for():
    """PLAN.md, issue 35: six seeds at each size, more (up to 10) while the 95% half-width is above 0.5 points;
    shown only when both sizes' intervals are above zero."""
    page = load_benchmark("small_model_page")
    stats = load_benchmark("paired_stats")

    def row(group, diffs):
        val = stats.paired_difference(dict(enumerate(diffs)), dict.fromkeys(range(len(diffs)), 0.0)).as_dict()
        return {"group": group, "val": val}

    tight = [0.6, 0.7, 0.8, 0.6, 0.7, 0.8]
    assert page.verdict([row("0.5", tight), row("0.3", tight)]) == "shown"
    assert page.verdict([row("0.5", tight), row("0.3", [-0.1, 0.0, 0.1, -0.1, 0.0, 0.1])]) == "not shown"
    assert page.verdict([row("0.5", tight[:5]), row("0.3", tight)]) == "pending (0.5: 5 of 6 seeds)"
    wide = [1.0, 0.2, 1.5, -0.3, 0.9, 1.2]  # sd 0.67: (t sd / 0.5)^2 = 11.9, capped at 10
    assert page.verdict([row("0.5", tight), row("0.3", wide)]) == "pending (0.3: 6 of 10 seeds)"
    middling = [0.9, 0.1, 1.2, 0.0, 0.8, 1.0]  # sd 0.497: (2.571 x 0.497 / 0.5)^2 = 6.5 -> 7 seeds
    assert page.verdict([row("0.5", tight), row("0.3", middling)]) == "pending (0.3: 6 of 7 seeds)"
    # the count is fixed by the first six: a seventh seed that narrows the interval does not lower it
    assert page.seeds_needed(row("0.3", wide + [0.8])["val"]) == 10
    assert page.verdict([row("0.5", tight), row("0.3", middling + [0.7])]) == "shown"
    assert page.verdict([row("0.5", tight)]) == "pending (one size only)"
