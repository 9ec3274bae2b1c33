"""`modelmeter history` and `modelmeter diff` (layer 7): the run store and report diffs.

`diff` compares two reports, each a stored run id (or unique prefix) or a path
to a JSON report, and with ``--fail-on`` works as a CI gate: exit 1 when a gate
fails (or its metric is missing), 2 on bad input, 0 otherwise. A gate on two
runs whose settings differ (batch, precision, hardware, torch …) is bad input
unless ``--allow-settings-change`` says the change is meant: "-94 % MACs" from a
smaller batch is no regression and no improvement.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ..core.errors import UserInputError
from ..core.report import HISTORY_SCHEMA
from ..report.diff import (
    METRICS,
    GateResult,
    MetricChange,
    SettingChange,
    describe_settings,
    diff_reports,
    evaluate_gates,
    model_name,
    models_note,
    parse_gates,
    settings_changes,
    settings_note,
)
from ..store import StoredRun
from ..stores import AnyStore, open_store, store_location
from .options import make_console

if TYPE_CHECKING:
    from rich.console import Console

_REPORT_SCHEMA_PREFIX = "modelmeter.report/"
DIFF_SCHEMA = "modelmeter.diff/1"
# A string, not a click.Path: a postgresql:// URL must reach open_store as written.
_DB_OPTION = click.option(
    "--db",
    metavar="PATH|URL",
    default=None,
    help="Run store: an SQLite file or a postgresql:// URL (default: $MODELMETER_DB, else "
    "runs.sqlite in the user data dir or $MODELMETER_HOME).",
)


@click.command()
@click.option("--model", default=None, help="Only runs of this model name.")
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True)
@_DB_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print the runs as JSON (full reports).")
def history(model: str | None, limit: int, db: str | None, as_json: bool) -> None:
    """List stored runs, newest first."""
    with open_store(db) as store:
        runs = store.list_runs(model=model, limit=limit)
        path = store_location(store)
    if as_json:
        click.echo(json.dumps({"schema": HISTORY_SCHEMA, "runs": [_run_json(run) for run in runs]},
                              indent=2))
        return
    if not runs:
        click.echo(f"no runs stored in {path}" + (f" for model {model!r}" if model else ""))
        return
    from ..report.terminal_store import history_view

    console = _console()
    for item in history_view(runs, path):
        console.print(item)


@click.command()
@click.argument("run_a")
@click.argument("run_b")
@_DB_OPTION
@click.option(
    "--fail-on",
    "fail_on",
    metavar="GATES",
    default=None,
    help="Comma-separated gates, e.g. 'latency_p50>+5%,flops>0%,throughput<-10%'; "
    "exit 1 when one holds or its metric is missing. Metrics: " + ", ".join(METRICS) + ".",
)
@click.option(
    "--allow-settings-change",
    is_flag=True,
    help="Gate even when the runs' settings differ (inputs, batch, seq, dtype, device, "
    "hardware, threads, torch); without it such a gate is refused (exit 2).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the changes and gate results as JSON.")
@click.pass_context
def diff(
    ctx: click.Context,
    run_a: str,
    run_b: str,
    db: str | None,
    fail_on: str | None,
    allow_settings_change: bool,
    as_json: bool,
) -> None:
    """Compare two reports: RUN_A and RUN_B are stored run ids or JSON report files."""
    # Gates first: a typo in CI should fail fast, before any store is opened.
    gates = parse_gates(fail_on) if fail_on is not None else []
    with open_store(db) as store:
        source_a, report_a = _load(run_a, store)
        source_b, report_b = _load(run_b, store)
    setting_changes = settings_changes(report_a, report_b)
    if gates and setting_changes and not allow_settings_change:
        raise UserInputError(
            f"A and B ran with different settings ({describe_settings(setting_changes)}): a gate compares "
            "like with like; rerun one with the other's settings, or pass "
            "--allow-settings-change if the change is meant"
        )
    changes = diff_reports(report_a, report_b)
    results = evaluate_gates(changes, gates)
    failed = [result for result in results if result.failed]
    note = models_note(report_a, report_b)
    notes = [text for text in (note, settings_note(setting_changes)) if text]

    if as_json:
        click.echo(
            json.dumps(
                {
                    "schema": DIFF_SCHEMA,
                    "a": source_a,
                    "b": source_b,
                    "changes": [_change_json(change) for change in changes],
                    "gates": [_gate_json(result) for result in results],
                    "passed": not failed,
                    "models": {"a": model_name(report_a), "b": model_name(report_b)},
                    "same_model": note is None,
                    "same_settings": not setting_changes,
                    "settings_changed": [_setting_json(change) for change in setting_changes],
                    "allow_settings_change": allow_settings_change,
                    "notes": notes,
                },
                indent=2,
            )
        )
    else:
        from ..report.terminal_store import diff_view

        console = _console()
        for item in diff_view(_describe(source_a), _describe(source_b), changes, results,
                              notes=notes):
            console.print(item)
    if failed:
        # stderr too, so the CI log says why the step failed even if stdout is captured.
        listed = ", ".join(result.gate.text for result in failed)
        click.echo(f"modelmeter: {len(failed)} of {len(results)} gates failed: {listed}", err=True)
        ctx.exit(1)  # main() turns this returned code into the process's exit status


# --- helpers ------------------------------------------------------------------


def _load(ref: str, store: AnyStore) -> tuple[dict[str, Any], dict[str, Any]]:
    """(description of the source, report dict) for a file path or stored run id."""
    path = Path(ref).expanduser()
    if path.is_file():
        return {"file": str(path)}, _read_report_file(path)
    looks_like_id = re.fullmatch(r"[0-9a-fA-F]+", ref.strip()) is not None
    if not looks_like_id:
        raise UserInputError(
            f"{ref!r} is neither a report file nor a stored run id; give a path to a JSON "
            "report or a run id from `modelmeter history`"
        )
    run = store.get(ref)
    return {"run": run.id, "model": run.model, "created_at": run.created_at.isoformat()}, run.report


def _read_report_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserInputError(f"cannot read report {path}: {exc}") from exc
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise UserInputError(f"{path} is not valid JSON: {exc}") from exc
    schema = doc.get("schema") if isinstance(doc, dict) else None
    if not isinstance(schema, str) or not schema.startswith(_REPORT_SCHEMA_PREFIX):
        raise UserInputError(
            f'{path} is not a modelmeter report (no "schema": "{_REPORT_SCHEMA_PREFIX}…"); '
            "write one with `modelmeter report MODEL --json FILE`"
        )
    return doc


def _console() -> Console:
    # The one console rule of the CLI: wide when piped, COLUMNS when set.
    return make_console()


def _run_json(run: StoredRun) -> dict[str, Any]:
    if run.error is not None:
        return {"id": run.id, "model": run.model, "unreadable": run.error}
    return {
        "id": run.id,
        "created_at": run.created_at.isoformat(),
        "model": run.model,
        "label": run.label,
        "fingerprint": run.fingerprint,
        "report": run.report,
    }


def _change_json(change: MetricChange) -> dict[str, Any]:
    metric = METRICS[change.name]
    return {
        "metric": change.name,
        "unit": metric.unit,
        "lower_is_better": metric.lower_is_better,
        "a": change.a,
        "b": change.b,
        "delta": change.delta,
        "relative": change.relative,
    }


def _setting_json(change: SettingChange) -> dict[str, Any]:
    return {"setting": change.setting, "a": change.a, "b": change.b}


def _gate_json(result: GateResult) -> dict[str, Any]:
    return {"gate": result.gate.text, "status": result.status, "reason": result.reason}


def _describe(source: dict[str, Any]) -> str:
    if "file" in source:
        return source["file"]
    return f"run {source['run']} ({source.get('model') or 'unknown model'}, {source['created_at'][:16]})"
