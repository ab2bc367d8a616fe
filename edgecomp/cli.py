"""The `edgecomp` command: a thin typer layer over the library.

Exit codes: 0 success; 2 the user's input is wrong (one line, no traceback);
1 anything else.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer

from .errors import UserInputError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Compress CNNs for Jetson-class devices.")
recipe_app = typer.Typer(no_args_is_help=True, help="Check recipes and print their schema.")
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
    set_: List[str] = typer.Option([], "--set", help="override a field: key.path=value (repeatable)"),
    out: Optional[Path] = typer.Option(None, "--out", help="run directory (default runs/<name>)"),
    resume: bool = typer.Option(False, "--resume", help="continue a killed run from its last finished step"),
) -> None:
    """Prune and fine-tune a network as the recipe says."""
    from .pipeline import compress as run_compress
    from .recipe import load_recipe

    try:
        result = run_compress(load_recipe(recipe, set_), out=out, resume=resume)
    except UserInputError as error:
        _fail(error)
    typer.echo(f"run directory: {result.run_dir}\nreport: {result.report_path}")


@app.command()
def report(run: Optional[Path] = typer.Option(None, "--run", help="run directory (default: newest under runs/)")):
    """Render a run's report.md and plots again from its metrics."""
    from .recipe import load_recipe
    from .report import render

    try:
        run_dir = run or _newest_run()
        path = render(run_dir, load_recipe(run_dir / "recipe.yaml"))
    except UserInputError as error:
        _fail(error)
    typer.echo(f"report: {path}")


@recipe_app.command("check")
def recipe_check(
    file: str = typer.Argument(..., help="recipe YAML or shipped recipe name"),
    set_: List[str] = typer.Option([], "--set", help="override a field: key.path=value"),
) -> None:
    """Validate a recipe and print it resolved (all defaults filled in)."""
    from .recipe import dump_recipe, load_recipe

    try:
        typer.echo(dump_recipe(load_recipe(file, set_)), nl=False)
    except UserInputError as error:
        _fail(error)


@recipe_app.command("schema")
def recipe_schema() -> None:
    """Print the recipe's JSON Schema (every field with its description)."""
    from .recipe import recipe_schema as schema

    typer.echo(json.dumps(schema(), indent=2))


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        typer.echo("interrupted; continue with --resume", err=True)
        sys.exit(130)
