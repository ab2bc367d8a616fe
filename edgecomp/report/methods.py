"""The report's "How each figure was measured": one line per kind of number, its settings read from the
same files as the numbers themselves."""

from __future__ import annotations

from typing import Any, Optional

from .sources import RunFiles


def _subset(count: Optional[int], split: str) -> str:
    return f"the first {count} images of the {split} split" if count else f"the whole {split} split"


def compress_methods(files: RunFiles, recipe) -> list[str]:
    rows, data = files.rows, recipe.data
    timed = next((r for r in rows if r.get("latency_ms") is not None), None)
    lines = [
        "- **MACs, params**: Torch-Pruning's `count_ops_and_params` on one batch-1 input "
        f"({recipe.model.in_channels}×{recipe.model.input_size}×{recipe.model.input_size}); MACs ratio against "
        "the dense model (step 0).",
        _accuracy_method(rows, data),
        f"- **magnitude**: the `{recipe.augment.schedule.kind.value}` schedule's M for the step "
        "(torchvision RandAugment scale, 0–30).",
    ]
    lines.append(_host_latency_line(timed))
    if recipe.prune.target.kind == "latency":
        target = recipe.prune.target
        lines.append(f"- **latency target**: every channel count on the block measured on `{target.device}` "
                     f"({target.runtime.value}); each step's model is exported to ONNX and timed beside the dense "
                     f"model, {target.latency_iterations} alternating rounds, and re-planned from the measurement "
                     "until it meets the step's budget.")
    return lines


def _accuracy_method(rows: list[dict[str, Any]], data) -> str:
    validation = f"- **val acc / test acc**: PyTorch fp32 top-1 on {_subset(data.val_subset, 'validation')}"
    if rows[-1].get("test_accuracy") is None:
        return f"{validation}; no test accuracy: the data has no held-out test split (– in the table)."
    return f"{validation} / on {_subset(data.test_subset, 'held-out test')}; the test split never chooses anything."


def _host_latency_line(timed: Optional[dict[str, Any]]) -> str:
    if timed is None:
        return "- **host latency**: not measured (`device.latency_iterations: 0`)."
    if timed.get("latency_iterations") is None:  # a row written before the spread was recorded
        return ("- **host latency**: median of batch-1 PyTorch forwards on this host, no spread recorded: a rough "
                "trend only.")
    threads = timed.get("latency_threads")
    threads = f"{threads} PyTorch thread(s)" if threads else "PyTorch's default thread count (not recorded)"
    return (f"- **host latency** (per step, `{timed.get('latency_device')}`): {timed['latency_iterations']} "
            f"batch-1 PyTorch forwards (perf_counter) after warm-up on {threads}, median with its 25th–75th "
            "percentiles. From step 1 on the dense model runs alternately with the step's model in the same loop; "
            "**host speed-up** is the median of the paired ratios dense/model, which machine load moves less than "
            "either time, as long as PyTorch has no more threads than free cores (`device.latency_threads`). A "
            "step whose time or ratio spreads too far (p25–p75 against the median; the row says how far) is shown "
            "as not meaningful. The absolute milliseconds move with the machine's load: read them as a trend on this "
            "host, not as a device measurement (that is the Bench section).")


def export_methods(export: Optional[dict[str, Any]]) -> list[str]:
    if export is None:
        return []
    fid = export["fidelity"]
    lines = [f"- **ONNX fidelity**: the exported model and the reference ({fid['reference']}) run on {fid['images']} "
             f"validation images at batch sizes {', '.join(map(str, fid['batch_sizes']))}; passes when every "
             f"logit is within {fid['atol']:g}."]
    int8 = export.get("int8")
    if int8:
        lines.append(f"- **INT8 accuracy**: {int8['scheme']}, calibrated on {int8['calib_images']} "
                     f"{int8['calib_split']} images; top-1 of the int8 and the fp32 ONNX model with onnxruntime "
                     f"on the same {int8['images']} validation images.")
    return lines


def bench_methods(benches: list[dict[str, Any]]) -> list[str]:
    if not benches:
        return []
    runs = "; ".join(sorted({f"{e['device']}: {e['iterations']} timed runs after {e['warmup']} warm-up, "
                             f"batch {e['batch']}" for e in benches}))
    lines = [
        f"- **p50/p99, throughput** (Bench): {runs}; each run timed on the device (perf_counter, a GPU "
        "synchronised; trtexec's own timing with the trtexec backend); throughput = batch / mean latency.",
        "- **accuracy on device**: top-1 of the benched model, run by the same backend on the device, on the "
        "run's preprocessed validation images (count in the table).",
        "- **speed-up over dense**: the dense model exported the same way and timed on the same device with the "
        "same settings in the same session; dense p50 / model p50. The dense model is timed, not evaluated, there: in "
        "latency.png its point sits at its PyTorch validation accuracy (step 0).",
    ]
    if any(e.get("power") for e in benches):
        lines.append("- **power**: `tegrastats` sampled while the model ran; mean of the input rail (else the sum "
                     "of rails); energy per image = mean power × mean latency / batch.")
    return lines


def methods_section(files: RunFiles, recipe) -> list[str]:
    return ["## How each figure was measured", "", *compress_methods(files, recipe),
            *export_methods(files.export), *bench_methods(files.benches), ""]
