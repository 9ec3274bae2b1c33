"""Log a JSON report to MLflow (layer 4): params, metrics, artifacts; one run per configuration.

Pure flattening first (`flatten_params`, `flatten_metrics`: testable without
MLflow), then `connect` / `log_report` / `start_parent`, which import mlflow
lazily: a command without --mlflow never pays its import.

Keys: the report's dotted JSON path, each segment reduced to MLflow's portable
characters ([A-Za-z0-9_-], '.' between segments); a key over MLflow's 250
characters is cut and ends in '~' + 8 hex of its full path's sha1 (stable).
Lists of objects are keyed by their element's `path`/`key`/`op`/`name`/`backend`
when those are unique (the root module's empty path is `root`), else by index.
Rows that carry a unique integer `batch` (the bench sweep) are logged as one key
per figure with the batch size as MLflow's step, so MLflow plots them against batch.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.errors import UserInputError

MAX_KEY = 250  # mlflow.utils.validation.MAX_ENTITY_KEY_LENGTH
MAX_PARAM_VALUE = 6000  # MAX_PARAM_VAL_LENGTH
PARAM_SECTIONS = ("model", "settings", "environment")
ID_FIELDS = ("path", "key", "op", "name", "backend")
INSTALL = "--mlflow needs MLflow: install modelmeter[mlflow] (pip install 'modelmeter[mlflow]')"


def _segment(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.\-]+", "_", text).strip("._") or "root"


def _key(parts: list[str]) -> str:
    key = ".".join(_segment(p) for p in parts)
    if len(key) > MAX_KEY:
        key = key[:MAX_KEY - 9] + "~" + hashlib.sha1(key.encode()).hexdigest()[:8]
    return key


def _element_names(items: list[Any]) -> list[str]:
    if items and all(isinstance(i, dict) for i in items):
        for field in ID_FIELDS:
            names = [i.get(field) for i in items]
            if all(isinstance(n, str) for n in names) and len({_segment(n) for n in names}) == len(names):
                return names
    return [str(i) for i in range(len(items))]


def _batch_rows(items: list[Any]) -> bool:
    batches = [i.get("batch") if isinstance(i, dict) else None for i in items]
    return bool(items) and all(type(b) is int for b in batches) and len(set(batches)) == len(batches)


def flatten_metrics(doc: dict[str, Any]) -> list[tuple[str, float, int]]:
    """(key, value, step) for every numeric leaf outside model/settings/environment (bools and
    nulls are not figures; they stay in the JSON artifact). Step 0 unless in a batch row."""
    out: list[tuple[str, float, int]] = []

    def walk(value: Any, parts: list[str], step: int) -> None:
        if isinstance(value, bool) or value is None:
            return
        if isinstance(value, (int, float)):
            out.append((_key(parts), float(value), step))
        elif isinstance(value, dict):
            for k, v in value.items():
                walk(v, [*parts, str(k)], step)
        elif isinstance(value, list):
            if _batch_rows(value):
                for row in value:
                    walk({k: v for k, v in row.items() if k != "batch"}, parts, row["batch"])
            else:
                for name, item in zip(_element_names(value), value, strict=True):
                    walk(item, [*parts, name], step)

    for section, value in doc.items():
        if section not in PARAM_SECTIONS:
            walk(value, [section], 0)
    return out


def flatten_params(doc: dict[str, Any], command: str) -> dict[str, str]:
    """model.*, settings.*, environment.* and the hardware as strings (lists and nulls as JSON),
    each cut to MLflow's 6000 characters."""
    params: dict[str, str] = {"command": command}

    def walk(value: Any, parts: list[str]) -> None:
        if isinstance(value, dict) and value:
            for k, v in value.items():
                walk(v, [*parts, str(k)])
            return
        text = value if isinstance(value, str) else json.dumps(value, default=str)
        params[_key(parts)] = text[:MAX_PARAM_VALUE]

    for section in PARAM_SECTIONS:
        if section in doc:
            walk(doc[section], [section])
    plan = doc.get("plan") or {}
    for name in ("hardware", "devices", "nodes", "mode"):
        if name in plan:
            walk(plan[name], ["plan", name])
    if isinstance(plan.get("settings"), dict):
        walk(plan["settings"], ["plan", "settings"])
    hardware = plan.get("hardware") or (doc.get("roofline") or {}).get("hardware")
    if hardware:
        params["hardware"] = str(hardware)
    measured = doc.get("measured") or {}
    if measured.get("device"):
        params["device"] = str(measured["device"])
    return params


# ------------------------------------------------------------------ logging (mlflow, lazily)


@dataclass(frozen=True)
class Tracking:
    client: Any
    uri: str
    uri_source: str  # "MLFLOW_TRACKING_URI" or "MLflow's default"
    experiment_id: str


def _failure(uri: str, exc: BaseException) -> UserInputError:
    text = " ".join(str(exc).split())
    if "Connection refused" in text or "Max retries exceeded" in text:
        text = "connection refused / no answer"
    return UserInputError(f"MLflow tracking at {uri} failed: {text[:240]}")


def connect() -> Tracking:
    """The tracking store of MLFLOW_TRACKING_URI (else MLflow's default), checked now, before
    the work; the experiment of MLFLOW_EXPERIMENT_ID / MLFLOW_EXPERIMENT_NAME, else Default."""
    try:
        import mlflow
        from mlflow import MlflowClient
    except ImportError:
        raise UserInputError(INSTALL) from None
    source = "MLFLOW_TRACKING_URI" if os.environ.get("MLFLOW_TRACKING_URI") else "MLflow's default"
    uri = mlflow.get_tracking_uri()
    try:
        client = MlflowClient(uri)
        experiment = os.environ.get("MLFLOW_EXPERIMENT_ID")
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME")
        if experiment:
            client.get_experiment(experiment)
        elif name:
            found = client.get_experiment_by_name(name)
            experiment = found.experiment_id if found else client.create_experiment(name)
        else:
            client.search_experiments(max_results=1)
            experiment = "0"
    except Exception as exc:  # noqa: BLE001 - mlflow raises MlflowException and requests' errors
        raise _failure(uri, exc) from None
    return Tracking(client, uri, source, str(experiment))


def start_parent(tracking: Tracking, name: str, params: dict[str, str]) -> str:
    """A parent run (a sweep); its children pass its id to log_report. End it with finish."""
    run = tracking.client.create_run(tracking.experiment_id, run_name=name)
    _log(tracking, run.info.run_id, [], params)
    return str(run.info.run_id)


def finish(tracking: Tracking, run_id: str, ok: bool = True) -> None:
    tracking.client.set_terminated(run_id, "FINISHED" if ok else "FAILED")


def _log(tracking: Tracking, run_id: str, metrics: list[tuple[str, float, int]], params: dict[str, str]) -> None:
    import time

    from mlflow.entities import Metric, Param

    now = int(time.time() * 1000)
    tracking.client.log_batch(run_id, metrics=[Metric(k, v, now, s) for k, v, s in metrics],
                              params=[Param(k, v) for k, v in params.items()])


def log_report(tracking: Tracking, doc: dict[str, Any], command: str, artifacts: tuple[str, ...] = (),
               parent_run_id: str | None = None, run_name: str | None = None) -> str:
    """One run: params, metrics, the report as report.json and the given files; returns its id."""
    tags = {"modelmeter.command": command, "modelmeter.schema": str(doc.get("schema"))}
    if parent_run_id:
        tags["mlflow.parentRunId"] = parent_run_id  # what mlflow.start_run(nested=True) sets
    name = run_name or f"{command} {(doc.get('model') or {}).get('name', '')}".strip()
    try:
        run_id = str(tracking.client.create_run(tracking.experiment_id, tags=tags, run_name=name).info.run_id)
    except Exception as exc:  # noqa: BLE001
        raise _failure(tracking.uri, exc) from None
    try:
        _log(tracking, run_id, flatten_metrics(doc), flatten_params(doc, command))
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "report.json"
            path.write_text(json.dumps(doc, indent=2, default=str) + "\n")
            tracking.client.log_artifact(run_id, str(path))
        for extra in artifacts:
            tracking.client.log_artifact(run_id, extra)
        finish(tracking, run_id)
    except Exception as exc:  # noqa: BLE001
        try:
            finish(tracking, run_id, ok=False)
        except Exception:  # noqa: BLE001, S110 - the first failure is the one to report
            pass
        raise _failure(tracking.uri, exc) from None
    return run_id
