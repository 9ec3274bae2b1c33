"""The child process a sweep runs its configurations in: ``python -m modelmeter.sweep.worker``.

It imports modelmeter (and torch, and the module of the command named as its
argument) once, then runs one request a line from stdin
through the CLI's own `main()`, in-process, and answers one JSON line
``{"rc": int, "error": str | null}`` per request on the protocol pipe. So a sweep
pays the imports once per worker instead of once per configuration, while a
crash (a segfault, the OOM killer, a hang past the timeout) still kills only
this process: the parent records that configuration as failed and starts a new
worker for the next one.

Request: ``{"argv": ["report", "gpt2", ..., "--json", FILE]}``. ``error`` is the
last line the command wrote to stderr when it failed. The command's stdout is
thrown away (the sweep reads the JSON file). Before importing anything heavy the
worker pins itself to the cores in ``MODELMETER_SWEEP_CPUS`` (comma-separated),
so measuring workers never share a core.
"""

from __future__ import annotations

import io
import json
import os
import sys

CPUS_ENV = "MODELMETER_SWEEP_CPUS"


def _pin() -> None:
    cpus = os.environ.get(CPUS_ENV)
    if cpus and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {int(c) for c in cpus.split(",")})


def _run(argv: list[str]) -> dict[str, object]:
    from modelmeter.cli.main import main

    err = io.StringIO()
    out = io.StringIO()
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = out, err
    rc = 0
    try:
        main(argv)
    except SystemExit as exc:
        rc = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException as exc:  # noqa: BLE001 - a traceback in one config must not end the worker
        rc = 1
        err.write(f"{type(exc).__name__}: {exc}\n")
    finally:
        sys.stdout, sys.stderr = saved
    lines = [line.strip() for line in err.getvalue().splitlines() if line.strip()]
    return {"rc": rc, "error": (lines[-1] if lines else f"exit status {rc}") if rc else None}


def main() -> int:
    _pin()
    # The protocol gets the real stdout to itself; fd 1 becomes /dev/null, so C code
    # that prints (a library's banner) cannot corrupt an answer.
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    # The imports paid once, before the first request: the command's module and torch.
    import importlib

    from modelmeter.cli.main import COMMANDS

    if len(sys.argv) > 1 and sys.argv[1] in COMMANDS:
        importlib.import_module(COMMANDS[sys.argv[1]].split(":")[0])
        import torch  # noqa: F401

    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        answer = _run([str(a) for a in request["argv"]])
        proto.write(json.dumps(answer) + "\n")
        proto.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
