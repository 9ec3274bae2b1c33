"""A progress line on stderr while a long command works (layer 7).

A command that traces a 70 B model or searches hundreds of layouts can take many
seconds; without a word it looks hung. `step_progress` gives the pipeline's
`on_status` callback a rich spinner on **stderr** naming the current step and
its elapsed time. It appears only once a step has run for `SHOW_AFTER_S` (short
commands stay quiet), is transient (erased when the command ends, so the output
on stdout is as before), and is off when stderr is not a terminal (logs and
pipes get nothing) or with `--quiet`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import click
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

SHOW_AFTER_S = 1.0


def quiet_option(fn: Callable[..., object]) -> Callable[..., object]:
    """--quiet: no progress line on stderr."""
    return click.option("--quiet", "-q", "no_progress", is_flag=True,
                        help="No progress line on stderr (it is off anyway when stderr is not a terminal).")(fn)


def _silent(_text: str) -> None:
    pass


@contextmanager
def step_progress(quiet: bool = False, show_after_s: float = SHOW_AFTER_S) -> Iterator[Callable[[str], None]]:
    """Yield an `on_status(text)` callback drawing the step on stderr (see the module docstring)."""
    console = Console(stderr=True)
    if quiet or not console.is_terminal:
        yield _silent
        return
    bar = Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                   console=console, transient=True)
    task = bar.add_task("starting", total=None)
    lock = threading.Lock()
    timer: list[threading.Timer] = []

    def show() -> None:
        with lock:
            if not bar.live.is_started:
                bar.start()

    def arm() -> None:  # under the lock: the next step gets its own second before it shows
        for t in timer:
            t.cancel()
        timer[:] = [threading.Timer(show_after_s, show)]
        timer[0].daemon = True
        timer[0].start()

    def on_status(text: str) -> None:
        with lock:
            bar.reset(task, description=text)  # elapsed counts from this step's start
            if not bar.live.is_started:
                arm()

    with lock:
        arm()
    try:
        yield on_status
    finally:
        with lock:
            for t in timer:
                t.cancel()
            bar.stop()


__all__ = ["SHOW_AFTER_S", "quiet_option", "step_progress"]
