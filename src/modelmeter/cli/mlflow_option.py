"""--mlflow for report, bench and plan (layer 7): connect before the work, log after it."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import click

# A dead server with MLflow's own defaults (7 retries, backoff factor 2, 120 s timeout) took
# 245 s to fail here; these fail in a few seconds. A user's own settings win.
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                 "MLFLOW_HTTP_REQUEST_TIMEOUT": "15"}


def mlflow_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--mlflow", "mlflow_flag", is_flag=True,
                        help="Log params, metrics and the JSON/HTML to MLflow (MLFLOW_TRACKING_URI; "
                             "needs modelmeter[mlflow]).")(fn)


def connect_tracking() -> Any:
    for name, value in HTTP_DEFAULTS.items():
        os.environ.setdefault(name, value)  # a CLI default: this process ends with the command
    from ..report.mlflow_log import connect

    return connect()


def log_and_say(tracking: Any, console: Any, doc: dict[str, Any], command: str, artifacts: tuple[str, ...]) -> str:
    from ..report.mlflow_log import log_report

    run_id = log_report(tracking, doc, command, tuple(a for a in artifacts if a and a != "-"))
    console.print(f"logged MLflow run {run_id} to {tracking.uri} ({tracking.uri_source})",
                  markup=False, highlight=False)
    return run_id
