"""report.md's sections as Markdown lines, each from the run directory's files alone.

`figures` is the set of PNG names written beside the report this time: a
section embeds a figure only when it exists.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from .sources import RunFiles

FIGURE_TITLES = {
    "pareto.png": "accuracy vs MACs", "magnitude.png": "magnitude per step",
    "teacher_curves.png": "teacher calibration curves", "latency.png": "accuracy vs measured latency",
    "latency_target.png": "accuracy vs measured latency (latency target)",
    "int8.png": "INT8 vs fp32 accuracy",
}


def fmt(value: Any, spec: str, suffix: str = "") -> str:
    return "–" if value is None else format(value, spec) + suffix


def figure(name: str, figures: set[str]) -> list[str]:
    return [f"![{FIGURE_TITLES[name]}]({name})", ""] if name in figures else []


# ---------------------------------------------------------------- compress


def summary(files: RunFiles, recipe) -> list[str]:
    dense, final = files.rows[0], files.rows[-1]
    return [
        f"# edgecomp run `{recipe.name}`", "",
        f"Model `{recipe.model.arch}` at {recipe.model.input_size} px on `{recipe.data.dataset.value}`; "
        f"{recipe.prune.steps} pruning steps ({recipe.prune.importance.value} importance) to "
        f"{final['macs_ratio']:.1%} of the dense MACs; augmentation `{recipe.augment.policy.value}` with the "
        f"`{recipe.augment.schedule.kind.value}` magnitude schedule.", "",
        _accuracy_line(dense, final), *_split_lines(dense), "",
    ]


def _accuracy_line(dense: dict[str, Any], final: dict[str, Any]) -> str:
    if final.get("test_accuracy") is None:
        return (f"No held-out test split, so no test accuracy: final validation accuracy {final['accuracy']:.4f} vs "
                f"dense {dense['accuracy']:.4f} (validation images chose nothing either, but they are no test set).")
    return (f"Final test accuracy {final['test_accuracy']:.4f} vs dense {dense['test_accuracy']:.4f} "
            f"({(final['test_accuracy'] - dense['test_accuracy']) * 100:+.2f} points).")


def _split_lines(dense: dict[str, Any]) -> list[str]:
    """Which folder or fraction each split is, as the run recorded it (runs before this record have none)."""
    splits = dense.get("splits")
    if not splits:
        return []
    return ["", *(f"- {name}: {splits[key]}" for key, name in
                  (("train", "training"), ("val", "validation"), ("test", "test")) if key in splits)]


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| step | MACs | MACs ratio | params | magnitude | val acc | test acc | host latency p50 [p25–p75] (ms) "
        "| host speed-up | fine-tune img/s |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        latency, speedup = _host_latency_cells(row)
        lines.append(
            f"| {row['step']}{' (dense)' if row['step'] == 0 else ''} | {row['macs'] / 1e6:.2f} M "
            f"| {row['macs_ratio']:.3f} | {row['params'] / 1e3:.1f} k | {row['magnitude']:.1f} "
            f"| {row['accuracy']:.4f} | {fmt(row.get('test_accuracy'), '.4f')} | {latency} "
            f"| {speedup} | {fmt(row.get('train_throughput'), '.0f')} |"
        )
    return "\n".join(lines)


def _host_latency_cells(row: dict[str, Any]) -> tuple[str, str]:
    """The host latency and speed-up cells; a measurement whose spread makes it meaningless shows no figure."""
    spread = (f" [{row['latency_p25_ms']:.2f}–{row['latency_p75_ms']:.2f}]"
              if row.get("latency_p25_ms") is not None else "")
    latency = "not meaningful (spread)" if row.get("latency_unreliable") else \
        f"{fmt(row.get('latency_ms'), '.2f')}{spread}"
    speedup = "not meaningful (spread)" if row.get("latency_speedup_unreliable") else \
        fmt(row.get("latency_speedup"), ".2f", "×")
    return latency, speedup


def compress_section(files: RunFiles, figures: set[str]) -> list[str]:
    flagged = [f"- step {r['step']}: host {what} not meaningful: {r[key]}" for r in files.rows
               for key, what in (("latency_unreliable", "latency"), ("latency_speedup_unreliable", "speed-up"))
               if r.get(key)]
    return ["## Compress", "", table(files.rows), "", *(flagged + [""] if flagged else []),
            *figure("pareto.png", figures),
            *figure("magnitude.png", figures), *teacher_section(files.rows, figures)]


def teacher_section(rows: list[dict[str, Any]], figures: set[str]) -> list[str]:
    if not any(r.get("calibration") or r.get("mean_difficulty") is not None for r in rows):
        return []
    lines = ["### Teacher (finding C)", "", "| step | target (× clean acc) | chosen M | mean difficulty | filtered | "
             "weight range |", "|---:|---:|---:|---:|---:|---:|"]
    for row in rows[1:]:
        cal = row.get("calibration") or {}
        weights = f"{row['weight_min']:.2f}–{row['weight_max']:.2f}" if row.get("weight_max") else "–"
        lines.append(
            f"| {row['step']} | {fmt(cal.get('target_fraction'), '.3f')} | {fmt(cal.get('chosen'), '.1f')} "
            f"| {fmt(row.get('mean_difficulty'), '.3f')} | {fmt(row.get('filtered_fraction'), '.1%')} | {weights} |"
        )
    return lines + ["", *figure("teacher_curves.png", figures)]


# ---------------------------------------------------------------- export


def _size(files: dict[str, int], name: str) -> str:
    size = files.get(name)
    return "–" if size is None else f"{size / 1e3:.1f} kB" if size < 1e6 else f"{size / 1e6:.2f} MB"


def export_section(export: Optional[dict[str, Any]], figures: set[str]) -> list[str]:
    if export is None:
        return ["## Export", "", "Not exported yet: `edgecomp export --run DIR` adds it here.", ""]
    onnx, fid, sizes = export["onnx"], export["fidelity"], export.get("files", {})
    folded = len((export.get("fold_bn") or {}).get("folded", []))
    lines = [
        "## Export", "",
        f"Precision `{export['precision']}`, formats {', '.join(f'`{f}`' for f in export['formats'])}; "
        f"opset {onnx['opset']} ({onnx['exporter']}); {folded} conv+BN pairs folded; exported "
        f"{export.get('created', '?')}.", "",
        "| artefact | size | check | result |", "|---|---:|---|---|",
        f"| `{onnx['file']}` (fp32) | {_size(sizes, onnx['file'])} | logits against the reference "
        f"({fid['reference']}): {fid['images']} images at batch {', '.join(map(str, fid['batch_sizes']))} "
        f"| max abs logit diff {fid['max_abs_diff']:.2e} (atol {fid['atol']:g}), top-1 agreement "
        f"{fid['top1_agreement']:.2%}: **{'passed' if fid['passed'] else 'FAILED'}** |",
    ]
    lines += _bench_input_rows(export, sizes) + _int8_rows(export.get("int8"), sizes)
    lines += _engine_rows(export.get("engine"))
    return lines + ["", *figure("int8.png", figures)]


def _bench_input_rows(export: dict[str, Any], sizes: dict[str, int]) -> list[str]:
    """What export wrote for bench: the images accuracy is measured on, and the dense model speed-up is timed
    against."""
    rows = []
    if export.get("eval"):
        ev = export["eval"]
        rows.append(f"| `{ev['file']}` | {_size(sizes, ev['file'])} | bench's accuracy input | {ev['images']} "
                    f"{ev['split']} images, preprocessed {ev['preprocessing']} |")
    if export.get("dense"):
        dense, fid = export["dense"], export["dense"]["fidelity"]
        rows.append(f"| `{dense['file']}` (fp32) | {_size(sizes, dense['file'])} | the dense step ({dense['from']}) "
                    f"through the same exporter, bench's speed-up reference | max abs logit diff "
                    f"{fid['max_abs_diff']:.2e} (recorded, not gated) |")
    return rows


def _int8_rows(int8: Optional[dict[str, Any]], sizes: dict[str, int]) -> list[str]:
    if not int8:
        return []
    return [
        f"| `{int8['file']}` (int8, {int8['scheme']}) | {_size(sizes, int8['file'])} | top-1 against the fp32 "
        f"ONNX on the same {int8['images']} images | int8 {int8['top1_int8']:.2%} vs fp32 {int8['top1_fp32']:.2%} "
        f"({-int8['drop_points']:+.2f} points), same top-1 on {int8['top1_agreement']:.2%} |",
        f"| `{int8['calib_file']}` | {_size(sizes, int8['calib_file'])} | calibration input | "
        f"{int8['calib_images']} {int8['calib_split']} images |",
    ]


def _engine_rows(engine: Optional[dict[str, Any]]) -> list[str]:
    if not engine:
        return []
    key = engine.get("key") or {}
    described = ", ".join(f"{k} {v}" for k, v in key.items() if k != "onnx_sha256" and v is not None)
    return [f"| `{engine['file']}` (TensorRT) | – | engine key: {described}, ONNX sha256 "
            f"{str(key.get('onnx_sha256', ''))[:12]}… | built on {engine.get('built_on', '?')}"
            f"{' (reused: key matched)' if engine.get('reused') else ''} |"]


# ---------------------------------------------------------------- bench


def _power(power: Optional[dict[str, Any]]) -> str:
    if not power:
        return "not measured"
    energy = power.get("energy_mj_per_image")
    return f"{power['mean_mw'] / 1000:.2f} W" + (f", {energy:.2f} mJ/img" if energy is not None else "")


def _engine_key(entry: dict[str, Any]) -> str:
    engine = entry.get("engine")
    if not engine:
        return "– (no engine)"
    return f"`{Path(engine.get('path') or engine.get('engine', '?')).name}`"


def bench_section(benches: list[dict[str, Any]], figures: set[str]) -> list[str]:
    if not benches:
        return ["## Bench", "", "Not measured yet: `edgecomp bench --run DIR --device host|NAME|ssh://...` adds it "
                "here.", ""]
    lines = ["## Bench", "",
             "| device | model | backend | precision | batch | p50 (ms) | p99 (ms) | throughput (img/s) "
             "| accuracy on device | dense p50 (ms) | speed-up over dense | power | engine key | file |",
             "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|---|"]
    for e in benches:
        latency, dense = e.get("latency_ms") or {}, (e.get("dense") or {}).get("latency_ms") or {}
        accuracy = f"{e['accuracy']:.4f} ({e['accuracy_samples']} img)" if e.get("accuracy") is not None else "–"
        source = e["source"] + ("" if e["complete"] else " (incomplete)")
        lines.append(
            f"| {e['device']} | `{e['model']}` | {e.get('backend')} ({e.get('provider')}) | {e.get('precision')} "
            f"| {e['batch']} | {fmt(latency.get('p50'), '.3f')} | {fmt(latency.get('p99'), '.3f')} "
            f"| {fmt(e.get('throughput_fps'), '.1f')} | {accuracy} | {fmt(dense.get('p50'), '.3f')} "
            f"| {fmt(e.get('speedup'), '.2f', '×')} | {_power(e.get('power'))} | {_engine_key(e)} | {source} |")
    notes = [f"- {e['device']} ({e['source']}): {w}" for e in benches for w in e.get("warnings") or []]
    notes += [f"- {e['device']} ({e['source']}): stopped with: {e['error']}" for e in benches if e.get("error")]
    return lines + [""] + (notes + [""] if notes else []) + figure("latency.png", figures)
