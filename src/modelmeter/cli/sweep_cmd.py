"""`modelmeter sweep SPEC`: run a grid of configurations, each in its own process (layer 7).

The spec and grid are `modelmeter.sweep.spec`; running them is
`modelmeter.sweep.run`. This module validates, picks the executor, skips what
the store already holds, draws progress and writes the summary.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import click

from ..core.errors import UserInputError
from .mlflow_option import mlflow_option
from .progress import quiet_option

SWEEP_SCHEMA = "modelmeter.sweep/1"


@click.command()
@click.argument("spec", type=click.Path(dir_okay=False))
@click.option("--db", default=None, metavar="PATH|URL",
              help="Run store the results go to: a SQLite file or a postgresql:// URL (default: "
                   "$MODELMETER_DB, else the one `report --save` uses).")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Configurations run at once here (default: 1 when they measure, else the cores).")
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Seconds one configuration may take before it is killed and recorded as failed "
                   "(default: 600).")
@click.option("--force", is_flag=True, help="Run every configuration again, even those already stored.")
@click.option("--dry-run", is_flag=True, help="List the configurations (and which are stored); run nothing.")
@click.option("--json", "json_path", default=None, metavar="PATH",
              help="Write the summary as JSON ('-' = stdout).")
@click.option("--ray", "ray_address", default=None, metavar="ADDRESS|auto",
              help="Run the configurations as Ray tasks on the Ray cluster at ADDRESS ('auto': the "
                   "one running here); needs modelmeter[ray].")
@mlflow_option
@quiet_option
def sweep(spec: str, db: str | None, workers: int | None, timeout_s: float | None, force: bool,
          dry_run: bool, json_path: str | None, ray_address: str | None, mlflow_flag: bool,
          no_progress: bool) -> None:
    """Run the grid a SPEC file (TOML, or YAML with PyYAML) describes; results go to the store.

    A rerun skips the configurations already stored (--force redoes them); a failed
    one is not stored, so a rerun retries it. Ctrl-C stops cleanly: finished rows stay.
    """
    from ..stores import open_store, store_location
    from ..sweep.run import DEFAULT_TIMEOUT_S, SweepConfig, bind, make_executor
    from ..sweep.spec import config_hash, load_spec
    from .options import check_outputs

    grid = load_spec(Path(spec), command_params)
    points = grid.points()
    if not points:
        raise UserInputError(f"{spec}: the exclusions drop every configuration; nothing to run")
    configs = [SweepConfig(command=grid.command, args=p.args, key=p.key,
                           config_hash=config_hash(grid.command, p.args), measuring=p.measuring)
               for p in points]
    check_outputs(json=json_path)
    store = open_store(db)
    location = store_location(store)  # for people: a URL's password is masked
    target = getattr(store, "url", None) or str(store.path)  # for the workers: the real one
    if not dry_run:
        store.check_writable()  # before the first configuration, not after the last
    measuring = any(c.measuring for c in configs)
    cpus = None if ray_address else _worker_cpus(workers, measuring, configs)
    n_workers = len(cpus) if cpus else (workers or (1 if measuring else _core_count()))
    with store:
        stored = {c.config_hash: store.find_config(c.config_hash) for c in configs}
    if not force:
        todo = [c for c in configs if stored[c.config_hash] is None]
    else:
        todo = list(configs)
    skipped = [c for c in configs if c not in todo]

    if dry_run:
        _print_dry_run(configs, stored)
        return

    tracking = parent = None
    if mlflow_flag:
        from ..report.mlflow_log import start_parent
        from .mlflow_option import connect_tracking

        tracking = connect_tracking()  # a missing extra or a dead server: before the first configuration
        parent = start_parent(tracking, f"sweep {Path(spec).name}",
                              {"command": "sweep", "spec": spec, "sweep.command": grid.command,
                               "sweep.configurations": str(len(configs))})
    rows: dict[str, dict[str, Any]] = {
        c.config_hash: _row(c, "skipped", run_id=getattr(stored[c.config_hash], "id", None)) for c in skipped}
    if ray_address:
        from ..sweep.ray_exec import RayExecutor

        executor: Any = RayExecutor(ray_address, target)
    else:
        executor = make_executor(n_workers, cpus)
    fn = bind(target, timeout_s or DEFAULT_TIMEOUT_S)
    by_hash = {c.config_hash: c for c in todo}
    interrupted = False
    started = time.monotonic()
    with _progress(len(todo), no_progress) as advance:
        try:
            for outcome in executor.submit_all(todo, fn):
                config = by_hash[outcome.config_hash]
                rows[outcome.config_hash] = _row(config, "done" if outcome.ok else "failed",
                                                 run_id=outcome.run_id, error=outcome.error,
                                                 seconds=outcome.seconds)
                advance(config, outcome.ok)
                if tracking is not None and outcome.ok and outcome.run_id:
                    _log_child(tracking, parent, store, outcome.run_id, config)
        except KeyboardInterrupt:
            interrupted = True
            executor.cancel()
    for c in todo:
        rows.setdefault(c.config_hash, _row(c, "not run"))
    ordered = [rows[c.config_hash] for c in configs]
    summary = _summary(spec, grid.command, location, ordered, interrupted, time.monotonic() - started)
    _print_summary(summary)
    if tracking is not None:
        from ..report.mlflow_log import finish

        finish(tracking, parent, ok=not (summary["failed"] or interrupted))
        click.echo(f"logged MLflow parent run {parent} to {tracking.uri} ({tracking.uri_source}), "
                   f"{summary['done']} child runs")
    if json_path:
        from .options import write_json

        write_json(summary, json_path)
    if interrupted:
        sys.exit(130)
    if summary["failed"]:
        sys.exit(1)


def command_params(command: str) -> dict[str, tuple[str, str | None, bool]]:
    """flag -> (on form, off form or None, is a switch) of every option of `modelmeter COMMAND`."""
    # The root group (cli.main's lazy group) finds the command: no import of main here,
    # which imports this module.
    root = click.get_current_context().find_root()
    cmd = root.command.get_command(root, command)  # type: ignore[attr-defined]
    params: dict[str, tuple[str, str | None, bool]] = {}
    for param in cmd.params:
        opts = [o for o in param.opts if o.startswith("--")]
        if not opts:
            continue
        is_bool = bool(getattr(param, "is_flag", False))
        off = next((o for o in param.secondary_opts if o.startswith("--")), None)
        for opt in opts:
            params[opt] = (opt, off, is_bool)
        if off:
            params[off] = (off, opt, is_bool)  # `no-measure = true` reads as well
    return params


def _log_child(tracking: Any, parent: Any, store: Any, run_id: str, config: Any) -> None:
    """One nested MLflow run for a finished configuration, from the report the worker stored."""
    from ..report.mlflow_log import log_report

    with store:
        doc = store.get(run_id).report
    log_report(tracking, doc, config.command, parent_run_id=parent, run_name=_label(config.key))


def _worker_cpus(workers: int | None, measuring: bool, configs: list[Any]) -> list[tuple[int, ...]] | None:
    """One core set per measuring worker (they never share a core); None when nothing is pinned."""
    if not measuring or not workers or workers == 1:
        return None
    if any(_on_gpu(c) for c in configs):
        raise UserInputError("GPU measurements run one at a time here (--workers 1), so two never share a GPU")
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if not cores:
        raise UserInputError("cannot pin measuring workers to cores on this platform; use --workers 1")
    if workers > len(cores):
        raise UserInputError(f"--workers {workers} for a measuring sweep needs {workers} cores, and this "
                             f"process may use {len(cores)}: measuring workers never share a core")
    per = len(cores) // workers
    return [tuple(cores[i * per:(i + 1) * per]) for i in range(workers)]


def _on_gpu(config: Any) -> bool:
    return str(config.key.get("device", "")).startswith("cuda")


def _core_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _row(config: Any, status: str, run_id: str | None = None, error: str | None = None,
         seconds: float | None = None) -> dict[str, Any]:
    return {"config_hash": config.config_hash, "key": config.key, "command": config.command,
            "args": list(config.args), "status": status, "run_id": run_id, "error": error,
            "seconds": seconds}


def _summary(spec: str, command: str, db: str, rows: list[dict[str, Any]], interrupted: bool,
             seconds: float) -> dict[str, Any]:
    def count(status: str) -> int:
        return sum(1 for r in rows if r["status"] == status)

    return {"schema": SWEEP_SCHEMA, "spec": spec, "command": command, "db": db,
            "configurations": rows, "total": len(rows), "done": count("done"), "skipped": count("skipped"),
            "failed": count("failed"), "not_run": count("not run"), "interrupted": interrupted,
            "seconds": seconds}


def _label(row_or_key: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in row_or_key.items())


def _print_summary(summary: dict[str, Any]) -> None:
    line = (f"sweep: {summary['done']} done, {summary['skipped']} skipped (stored), "
            f"{summary['failed']} failed")
    if summary["not_run"]:
        line += f", {summary['not_run']} not run (interrupted)"
    click.echo(line + f"; store {summary['db']}")
    for row in summary["configurations"]:
        if row["status"] == "failed":
            click.echo(f"  failed: {_label(row['key'])}: {row['error']}")


def _print_dry_run(configs: list[Any], stored: dict[str, Any]) -> None:
    for c in configs:
        run = stored[c.config_hash]
        state = f"stored {run.id}" if run is not None else "to run"
        click.echo(f"{c.config_hash[:12]}  {state:<15}  modelmeter {c.command} {' '.join(c.args)}")
    n_stored = sum(1 for c in configs if stored[c.config_hash] is not None)
    click.echo(f"{len(configs)} configurations, {n_stored} stored, {len(configs) - n_stored} to run")


class _progress:
    """A rich bar with an ETA on stderr; off when stderr is not a terminal or with --quiet."""

    def __init__(self, total: int, quiet: bool) -> None:
        self.total, self.quiet = total, quiet
        self.bar: Any = None

    def __enter__(self) -> Any:
        from rich.console import Console

        console = Console(stderr=True)
        if self.quiet or not console.is_terminal or not self.total:
            return lambda config, ok: None
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.bar = Progress(TextColumn("sweep"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[failed]}"),
                            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=console,
                            transient=True)
        task = self.bar.add_task("sweep", total=self.total, failed="")
        failed = [0]
        self.bar.start()

        def advance(config: Any, ok: bool) -> None:
            failed[0] += not ok
            self.bar.update(task, advance=1, failed=f"{failed[0]} failed" if failed[0] else "")

        return advance

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()
