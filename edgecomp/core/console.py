"""The terminal: one stderr console and the progress bars of long loops (rich).

Rich draws progress bars only on a terminal; redirected to a log they vanish. So every long stage also
prints a line when it starts when the console is no terminal (`stage`), and the training loop one line
per epoch. Lines never wrap (soft_wrap): a long path in a log stays on one line.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

console = Console(stderr=True, soft_wrap=True)  # stdout stays for results a script may read


def progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.3f}"), TextColumn("{task.fields[rate]:.0f} img/s"),
        TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=True,
    )


@contextmanager
def stage(label: str, total: int) -> Iterator[Callable[[], None]]:
    """A long stage of `total` units: a progress bar on a terminal, one line saying what runs in a log.
    Yields the function to call after each unit."""
    if not console.is_terminal:
        console.print(f"  {label} ...")
        yield lambda: None
        return
    bar = Progress(TextColumn("  {task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TimeRemainingColumn(), console=console, transient=True)
    with bar:
        task = bar.add_task(label, total=total)
        yield lambda: bar.advance(task)
