"""The `edgecomp` command: a thin typer layer over the library.

Exit codes: 0 success; 2 the user's input is wrong (one line, no traceback);
1 anything else.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from .core.errors import EdgecompError, UserInputError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Compress CNNs for Jetson-class devices.")
recipe_app = typer.Typer(no_args_is_help=True, help="Copy, check and describe recipes.")
app.add_typer(recipe_app, name="recipe")


def _fail(error: UserInputError) -> None:
    typer.echo(str(error).splitlines()[0], err=True)
    raise typer.Exit(2)


def _newest_run(runs: Path = Path("runs")) -> Path:
    candidates = [p for p in runs.glob("*") if (p / "metrics.jsonl").is_file()] if runs.is_dir() else []
    if not candidates:
        raise UserInputError("--run: no run under runs/; give --run DIR")
    return max(candidates, key=lambda p: (p / "metrics.jsonl").stat().st_mtime)


@app.command()
def compress(
    recipe: str = typer.Option(..., "--recipe", help="recipe YAML, or the name of a shipped recipe"),
    set_: list[str] = typer.Option([], "--set", help="override a field: key.path=value (repeatable)"),
    out: Optional[Path] = typer.Option(None, "--out", help="run directory (default runs/<name>)"),
    resume: bool = typer.Option(False, "--resume", help="continue a killed run from its last finished step"),
) -> None:
    """Prune and fine-tune a network as the recipe says."""
    from . import compress as run_compress
    from .core.recipe import load_recipe

    try:
        result = run_compress(recipe, overrides=set_, out=out, resume=resume)
    except UserInputError as error:
        _fail(error)
    except KeyboardInterrupt:  # the recipe was read before the run started: its name gives the run directory
        _interrupted(out if out is not None else Path("runs") / load_recipe(recipe, set_).name)
    typer.echo(f"run directory: {result.run_dir}\nreport: {result.report_path}")


def _interrupted(run_dir: Path) -> None:
    """Ctrl-C: one line saying what was kept and the exact command that continues; exit 130 (128 + SIGINT)."""
    import shlex

    from .core.rundir import RunDir

    finished = RunDir(run_dir).finished_steps() if run_dir.is_dir() else []
    if len(finished) > 1:
        kept = f"steps 0–{finished[-1]} are kept in {run_dir} (step 0 = dense)"
    elif finished:
        kept = f"step 0 (the dense model) is kept in {run_dir}"
    elif (run_dir / "latency" / "block.json").is_file():
        kept = f"no step had finished; the latency target's timings are kept in {run_dir}"
    else:
        kept = f"no step had finished, nothing is kept in {run_dir}"
    again = ["edgecomp", *sys.argv[1:], *([] if "--resume" in sys.argv else ["--resume"])]
    typer.echo(f"interrupted: {kept}; continue with: {shlex.join(again)}", err=True)
    raise typer.Exit(130)


@app.command()
def report(run: Optional[Path] = typer.Option(None, "--run", help="run directory (default: newest under runs/)"),
           beside: Optional[Path] = typer.Option(None, "--beside", help="another run of the same network (e.g. "
                                                 "MACs-targeted): its steps are timed on --run's latency target "
                                                 "and drawn beside it")):
    """Render a run's report.md and plots again from its metrics."""
    from .core.recipe import load_recipe
    from .report import render

    try:
        run_dir = run or _newest_run()
        recipe = load_recipe(run_dir / "recipe.yaml")
        if beside is not None:
            from .compression.latency.beside import measure_beside

            measure_beside(run_dir, beside)
        path = render(run_dir, recipe)
    except UserInputError as error:
        _fail(error)
    except EdgecompError as error:  # the timing broke off on the target (a dropped connection): exit 1, one line
        typer.echo(f"report --beside: timing failed: {str(error).splitlines()[0]}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"report: {path}")


@app.command()
def export(
    run: Optional[Path] = typer.Option(None, "--run", help="run directory (default: newest under runs/)"),
    onnx: bool = typer.Option(False, "--onnx", help="model.onnx alone: no Q/DQ model even for an int8 recipe"),
    trt: bool = typer.Option(False, "--trt", help="also a TensorRT engine, built on --device"),
    precision: Optional[str] = typer.Option(None, "--precision", help="fp32, fp16 or int8 (default: the recipe's)"),
    device: Optional[str] = typer.Option(None, "--device", help="the target: --trt builds there (default: "
                                         "device.name); without --trt, NAME's TensorRT releases pick the opset"),
    opset: Optional[int] = typer.Option(None, "--opset", help="ONNX opset (default: for the target's TensorRT)"),
    calib_images: Optional[int] = typer.Option(None, "--calib-images", help="int8 calibration images (default 512)"),
    max_batch: Optional[int] = typer.Option(None, "--max-batch", help="engine profile: batch 1..N (default 8)"),
    dla_core: Optional[int] = typer.Option(None, "--dla-core", help="engine on this DLA core, GPU fallback"),
    fold_bn: Optional[bool] = typer.Option(None, "--fold-bn/--no-fold-bn", help="fold BN into convs (default on)"),
    accept_new_host_key: bool = typer.Option(False, "--accept-new-host-key",
                                             help="accept and record a first-seen ssh host key (never a changed one)"),
) -> None:
    """Export a run's model: verified ONNX, Q/DQ INT8 ONNX, TensorRT engine."""
    from . import export as run_export
    from .core.errors import ExportError, ExportInputError

    try:
        if onnx and trt:
            raise ExportInputError("--onnx: writes model.onnx alone; drop it to build an engine with --trt")
        result = run_export(run=run or _newest_run(), format="engine" if trt else "onnx" if onnx else None,
                            precision=precision, device=device, opset=opset, calib_images=calib_images,
                            max_batch=max_batch, dla_core=dla_core, fold_bn=fold_bn,
                            accept_new_host_key=accept_new_host_key)
    except UserInputError as error:
        _fail(error)
    except ExportError as error:  # not the user's input: exit 1, still one line
        typer.echo(f"export failed: {str(error).splitlines()[0]}", err=True)
        raise typer.Exit(1) from None
    fidelity, int8 = result.fidelity, result.info.get("int8")
    typer.echo(f"onnx: {result.onnx_path} (max |Δlogit| {fidelity['max_abs_diff']:.2e}, top-1 agreement "
               f"{fidelity['top1_agreement']:.2%} on {fidelity['images']} images)")
    if int8:
        typer.echo(f"int8: {result.int8_path} (top-1 {int8['top1_int8']:.2%} vs fp32 {int8['top1_fp32']:.2%})")
    if result.engine_path:
        typer.echo(f"engine: {result.engine_path}")
    typer.echo(f"details: {result.info_path}")


@app.command()
def devices(name: Optional[str] = typer.Argument(None, help="one profile, shown in full")) -> None:
    """List the known device profiles (edgecomp/deploy/devices/*.yaml), or show one in full."""
    from .deploy.devices import get_profile, load_profiles

    try:
        if name is not None:
            typer.echo(_profile_text(get_profile(name)))
            return
    except UserInputError as error:
        _fail(error)
    rows = [(p.name, p.gpu_arch or "-", f"{p.memory_gb:g}G" if p.memory_gb else "-", str(p.dla_cores),
             "yes" if p.int8 else "no", _span(p.tensorrt_versions))
            for p in load_profiles().values()]
    header = ("name", "GPU", "mem", "DLA", "INT8", "TensorRT")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:  # plain columns: fits 80 characters, pipes cleanly
        typer.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    typer.echo("\n`edgecomp devices NAME` shows one profile in full. --device takes NAME,\n"
               "a profile file, or ssh://user@host[:port].")


def _span(versions: list[str]) -> str:
    return "-" if not versions else versions[0] if len(versions) == 1 else f"{versions[0]}-{versions[-1]}"


def _profile_text(p) -> str:
    """One profile, one field a line (80 columns)."""
    releases = [f"  JetPack {r.jetpack}: L4T {r.l4t}, TensorRT {r.tensorrt}, CUDA {r.cuda}" for r in p.jetpack_releases]
    power = f"{p.power_mode.name} (nvpmodel -m {p.power_mode.id})" if p.power_mode else "-"
    import textwrap

    description = textwrap.fill(f"description: {p.description}", 80, subsequent_indent=" " * 13)
    lines = [f"name:        {p.name}", description, f"GPU:         {p.gpu_arch or '-'}",
             f"memory:      {f'{p.memory_gb:g} GB' if p.memory_gb else '-'}", f"DLA cores:   {p.dla_cores}",
             f"INT8:        {'yes' if p.int8 else 'no'}", f"max opset:   {p.max_onnx_opset or '-'}",
             f"power mode:  {power}", f"connection:  {p.connection or '-'}", "releases:", *(releases or ["  -"])]
    return "\n".join(lines)


@app.command()
def bench(
    run: Optional[Path] = typer.Option(None, "--run", help="run directory: measures its model.onnx"),
    model: Optional[Path] = typer.Option(None, "--model", help="an .onnx model or a TensorRT .engine; results go "
                                         "to <stem>.bench.json beside it, never into a run's bench.json"),
    device: Optional[str] = typer.Option(None, "--device", help="host, a profile (edgecomp devices) or "
                                         "ssh://user@host[:port] (default: the recipe's device.name, else host)"),
    iterations: int = typer.Option(100, "--iterations", help="timed inferences"),
    batch: int = typer.Option(1, "--batch", help="images per inference"),
    warmup: int = typer.Option(10, "--warmup", help="untimed inferences first"),
    backend: str = typer.Option("auto", "--backend", help="auto, onnxruntime, tensorrt or trtexec"),
    precision: Optional[str] = typer.Option(None, "--precision", help="TensorRT: fp32, fp16, int8 (default: "
                                            "export's); onnxruntime: fp32 model.onnx or int8 model.int8.onnx"),
    accept_new_host_key: bool = typer.Option(False, "--accept-new-host-key",
                                             help="accept and record a first-seen ssh host key (never a changed one)"),
) -> None:
    """Measure latency, throughput, accuracy and power on a device; writes bench.json."""
    from . import bench as run_bench

    if run is None and model is None:
        try:
            run = _newest_run()
        except UserInputError as error:
            _fail(error)
    try:
        result = run_bench(run=run, model=model, device=device, iterations=iterations, batch=batch, warmup=warmup,
                           backend=backend, precision=precision, accept_new_host_key=accept_new_host_key)
    except UserInputError as error:
        _fail(error)
    except EdgecompError as error:  # a failing program or a dropped connection: exit 1, one line
        typer.echo(f"bench failed: {str(error).splitlines()[0]}", err=True)
        raise typer.Exit(1) from None
    entry, latency = result.entry, result.latency_ms
    typer.echo(f"{result.device}: p50 {latency['p50']:.3f} ms, p99 {latency['p99'] or float('nan'):.3f} ms, "
               f"{result.throughput_fps or 0:.1f} img/s ({entry['backend']} {entry['precision']}, batch {entry['batch']})")
    if result.accuracy is not None:
        typer.echo(f"accuracy on the device: {result.accuracy:.4f} ({entry['accuracy_samples']} images)")
    if result.speedup is not None:
        typer.echo(f"speed-up over the dense model: {result.speedup:.2f}x")
    typer.echo(f"results: {result.bench_path}")


@app.command()
def study(
    recipe: str = typer.Option(..., "--recipe", help="recipe YAML, or the name of a shipped recipe"),
    set_: list[str] = typer.Option([], "--set", help="override a field: key.path=value (repeatable)"),
    sizes: str = typer.Option("1.0,0.6,0.3", help="MACs ratios to prune the dense model to, comma-separated"),
    magnitudes: str = typer.Option("0,5,9,14,20", help="magnitudes to fine-tune each size at"),
    max_epochs: int = typer.Option(60, help="cap on each cell's epochs; a cell stops earlier at its validation plateau"),
    patience: int = typer.Option(2, help="plateau rule: epochs without a gain before the LR is cut (patience + 1)"),
    workers: Optional[int] = typer.Option(None, help="worker processes (default: one per core)"),
    out: Optional[Path] = typer.Option(None, "--out", help="study directory (default runs/<name>-study)"),
) -> None:
    """Which magnitude suits which model size: grid, best M per size, heatmap, fitted linear schedule."""
    from .compression.convergence import PlateauRule
    from .compression.study import study as run_study
    from .compression.study import summary_table
    from .core.recipe import load_recipe

    parsed = load_recipe(recipe, set_)
    try:
        size_list = [float(v) for v in sizes.split(",") if v.strip()]
        magnitude_list = [float(v) for v in magnitudes.split(",") if v.strip()]
    except ValueError:
        raise UserInputError("--sizes/--magnitudes: give comma-separated numbers, e.g. 1.0,0.5") from None
    target = out or Path("runs") / f"{parsed.name}-study"
    from .core.console import console, progress

    with progress() as bar:
        task = bar.add_task("study cells", total=len(size_list) * len(magnitude_list), loss=0.0, rate=0.0)

        def report_cell(cell: dict) -> None:
            bar.update(task, advance=1)
            console.print(f"  size {cell['size']:g}, M={cell['magnitude']:g}: val accuracy {cell['accuracy']:.4f} "
                          f"after {cell['epochs']} epochs ({'plateau' if cell['converged'] else 'epoch cap'})")

        rule = PlateauRule(patience=patience, max_epochs=max_epochs)
        result = run_study(parsed, sizes=size_list, magnitudes=magnitude_list, rule=rule, out=target,
                           workers=workers, progress=report_cell)
    typer.echo(summary_table(result))
    typer.echo(f"fitted schedule: dense={result.fit['dense']}, min={result.fit['min']}")
    typer.echo(f"recipe snippet: {result.snippet_path}\nheatmap: {result.heatmap_path}")


@recipe_app.command("check")
def recipe_check(
    file: str = typer.Argument(..., help="recipe YAML or shipped recipe name"),
    set_: list[str] = typer.Option([], "--set", help="override a field: key.path=value"),
) -> None:
    """Validate a recipe and print it resolved (all defaults filled in)."""
    from .core.recipe import dump_recipe, load_recipe

    try:
        typer.echo(dump_recipe(load_recipe(file, set_)), nl=False)
    except UserInputError as error:
        _fail(error)


@recipe_app.command("init")
def recipe_init(
    name: str = typer.Argument(..., help="a shipped recipe: quickstart or resnet18_jetson"),
    dest: Optional[Path] = typer.Argument(None, help="file or folder to write (default: NAME.yaml here)"),
) -> None:
    """Copy a shipped recipe, with its comments, to edit and run; never overwrites a file."""
    from .core.recipe import copy_shipped_recipe

    try:
        path = copy_shipped_recipe(name, dest)
    except UserInputError as error:
        _fail(error)
    typer.echo(f"wrote {path}; edit it, then: edgecomp compress --recipe {path}")


@recipe_app.command("schema")
def recipe_schema() -> None:
    """Print the recipe's JSON Schema (every field with its description)."""
    from .core.recipe import recipe_schema as schema

    typer.echo(json.dumps(schema(), indent=2))


def _check_set_values(args: list[str]) -> None:
    """`--set` with nothing after it (or another option after it) is one line, not typer's usage box."""
    for index, arg in enumerate(args):
        if arg == "--set" and (index + 1 == len(args) or args[index + 1].startswith("--")):
            raise UserInputError("--set needs a value: --set key.path=value, e.g. --set prune.steps=3")


def main() -> None:
    """Entry point: user errors exit 2 and other edgecomp errors exit 1, each as one line; bugs keep
    their traceback (exit 1)."""
    try:
        _check_set_values(sys.argv[1:])
        app()
    except UserInputError as error:
        typer.echo(str(error).splitlines()[0], err=True)
        sys.exit(2)
    except EdgecompError as error:
        typer.echo(f"error: {str(error).splitlines()[0]}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        typer.echo("interrupted; continue with --resume", err=True)
        sys.exit(130)
