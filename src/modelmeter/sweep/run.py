"""Running a sweep's configurations: one process each, results saved to the store.

The executor interface (other executors, e.g. Ray, plug in here):

- `SweepConfig(command, args, key, config_hash, measuring)`: one grid point.
  ``args`` is the command line after the command name, without ``--json``;
  ``key`` is the grid point for display; ``measuring`` says it times something
  here, so it must not share a core or GPU.
- `run_config(config, db, timeout_s) -> ConfigOutcome`: a top-level, picklable
  function that runs the configuration in a child process
  (``python -m modelmeter.sweep.worker``, which runs the CLI's ``main()``), kills
  it after ``timeout_s``, and on success saves the JSON it wrote into the store
  at ``db`` (a path string; None = the default store) itself, with the
  configuration hash. A crash, a signal (the OOM killer), a nonzero exit or the
  timeout is an outcome with ``ok=False`` and a one-line ``error`` (the child's
  last stderr line); it never raises for those. Called in a `LocalExecutor`
  thread it uses that thread's long-lived worker (imports paid once per
  worker); anywhere else (a Ray task) it starts a fresh worker for the one
  configuration.
- `ConfigOutcome(config_hash, ok, run_id, error, seconds)`.
- `Executor`: ``submit_all(configs, fn) -> Iterator[ConfigOutcome]`` runs
  ``fn(config)`` for each configuration and yields outcomes as they finish;
  ``cancel()`` stops launching, terminates running children and makes
  ``submit_all`` return once the running ones are accounted for.
- `LocalExecutor(workers, pin=False)`: ``workers`` threads, each driving its own
  worker process; with ``pin`` each worker is pinned to its own cores.
- `make_executor(workers, pin)`: the one place the CLI picks an executor.

Failed configurations are not stored: the store keeps results only, so a rerun
retries every failure by default.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import queue
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ..core.errors import UserInputError

__all__ = ["ConfigOutcome", "Executor", "LocalExecutor", "SweepConfig", "make_executor", "run_config"]

DEFAULT_TIMEOUT_S = 600.0
CPUS_ENV = "MODELMETER_SWEEP_CPUS"  # the cores a worker pins itself to (worker.py reads it)
_KILL_GRACE_S = 3.0


@dataclass(frozen=True)
class SweepConfig:
    command: str
    args: tuple[str, ...]
    key: dict[str, Any]
    config_hash: str
    measuring: bool


@dataclass(frozen=True)
class ConfigOutcome:
    config_hash: str
    ok: bool
    run_id: str | None
    error: str | None
    seconds: float


class Executor(Protocol):
    def submit_all(self, configs: Iterable[SweepConfig],
                   fn: Callable[[SweepConfig], ConfigOutcome]) -> Iterator[ConfigOutcome]: ...

    def cancel(self) -> None: ...


class Cancelled(Exception):
    """The executor was cancelled while this configuration ran; nothing is recorded for it."""


# -- one worker process ---------------------------------------------------------


@dataclass
class _Worker:
    """A long-lived ``modelmeter.sweep.worker`` process (started on first use, restarted after a crash)."""

    command: str
    cpus: tuple[int, ...] | None = None
    proc: subprocess.Popen[str] | None = None
    stderr_path: Path | None = None
    cancelled: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> subprocess.Popen[str]:
        if self.proc is not None and self.proc.poll() is None:
            return self.proc
        env = dict(os.environ)
        if self.cpus:
            env[CPUS_ENV] = ",".join(map(str, self.cpus))
        if self.stderr_path is not None:  # the last worker's, now dead
            with contextlib.suppress(OSError):
                self.stderr_path.unlink()
        fd, name = tempfile.mkstemp(prefix="modelmeter-sweep-", suffix=".err")
        self.stderr_path = Path(name)
        with self.lock:
            if self.cancelled:
                os.close(fd)
                raise Cancelled
            # Its own session: a Ctrl-C at the terminal reaches the sweep only, which
            # then stops the workers itself (and keeps the rows already saved).
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "modelmeter.sweep.worker", self.command],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=fd, text=True,
                env=env, start_new_session=True)
        os.close(fd)
        return self.proc

    def run(self, argv: list[str], timeout_s: float) -> dict[str, Any]:
        """{"rc", "error"} of one request; a dead or hung worker becomes an error answer."""
        proc = self.start()
        assert proc.stdin is not None and proc.stdout is not None
        try:
            proc.stdin.write(json.dumps({"argv": argv}) + "\n")
            proc.stdin.flush()
        except (BrokenPipeError, OSError):
            return self._died(proc)
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                self.kill()
                return {"rc": -1, "error": f"timed out after {timeout_s:g} s (--timeout)"}
            ready, _, _ = select.select([proc.stdout], [], [], min(left, 0.5))
            if self.cancelled:
                raise Cancelled
            if ready:
                line = proc.stdout.readline()
                if not line:
                    return self._died(proc)
                return json.loads(line)

    def _died(self, proc: subprocess.Popen[str]) -> dict[str, Any]:
        if self.cancelled:
            raise Cancelled
        try:
            rc = proc.wait(timeout=_KILL_GRACE_S)
        except subprocess.TimeoutExpired:
            self.kill()
            rc = proc.returncode
        tail = _last_line(self.stderr_path)
        if rc is not None and rc < 0:
            name = signal.Signals(-rc).name if -rc in signal.valid_signals() else str(-rc)
            why = f"worker killed by {name}" + (" (out of memory?)" if -rc == signal.SIGKILL else "")
        else:
            why = f"worker exited with status {rc}"
        self.proc = None
        return {"rc": rc if rc else -1, "error": f"{why}: {tail}" if tail else why}

    def kill(self) -> None:
        with self.lock:
            proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=_KILL_GRACE_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def close(self) -> None:
        proc = self.proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(OSError):
                assert proc.stdin is not None
                proc.stdin.close()  # a clean end: the worker's loop finishes
            try:
                proc.wait(timeout=_KILL_GRACE_S)
            except subprocess.TimeoutExpired:
                self.kill()
        self.proc = None
        if self.stderr_path is not None:
            with contextlib.suppress(OSError):
                self.stderr_path.unlink()


def _last_line(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        with path.open("rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 8192))
            lines = [ln.strip() for ln in f.read().decode("utf-8", "replace").splitlines() if ln.strip()]
    except OSError:
        return None
    return " ".join(lines[-1].split()) if lines else None


_SLOT = threading.local()  # .worker: the LocalExecutor thread's own _Worker


# -- the interface --------------------------------------------------------------


def run_config(config: SweepConfig, db: str | None, timeout_s: float) -> ConfigOutcome:
    """Run one configuration in a child process and save its result (see the module docstring)."""
    start = time.monotonic()
    worker: _Worker | None = getattr(_SLOT, "worker", None)
    own = worker is None
    if worker is None:
        worker = _Worker(config.command)
    fd, json_name = tempfile.mkstemp(prefix="modelmeter-sweep-", suffix=".json")
    os.close(fd)
    json_path = Path(json_name)
    try:
        answer = worker.run([config.command, *config.args, "--json", str(json_path)], timeout_s)
        if answer.get("rc") != 0:
            return ConfigOutcome(config.config_hash, False, None, str(answer.get("error")),
                                 time.monotonic() - start)
        try:
            report = json.loads(json_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            return ConfigOutcome(config.config_hash, False, None,
                                 f"the command wrote no readable JSON: {exc}", time.monotonic() - start)
        run_id = _save(report, db, config.config_hash)
        return ConfigOutcome(config.config_hash, True, run_id, None, time.monotonic() - start)
    finally:
        if own:
            worker.close()
        with contextlib.suppress(OSError):
            json_path.unlink()


def _save(report: dict[str, Any], db: str | None, config_hash: str) -> str:
    from ..hardware.environment import environment_fingerprint
    from ..stores import open_store

    fingerprint = report.get("environment") if isinstance(report.get("environment"), dict) else None
    if fingerprint is None:
        fingerprint = environment_fingerprint()
    with open_store(db) as store:
        return store.save(report, fingerprint, config_hash=config_hash)


class LocalExecutor:
    """`workers` threads on this machine, each with its own long-lived worker process.

    `cpus`: one tuple of cores per worker to pin it to (measuring sweeps), or None.
    """

    def __init__(self, workers: int, cpus: list[tuple[int, ...]] | None = None) -> None:
        if workers < 1:
            raise UserInputError("workers must be at least 1")
        if cpus is not None and len(cpus) != workers:
            raise UserInputError("one core set per worker")
        self.workers = workers
        self.cpus = cpus
        self._stop = threading.Event()
        self._slots: list[_Worker] = []

    def submit_all(self, configs: Iterable[SweepConfig],
                   fn: Callable[[SweepConfig], ConfigOutcome]) -> Iterator[ConfigOutcome]:
        todo: queue.Queue[SweepConfig] = queue.Queue()
        for config in configs:
            todo.put(config)
        if todo.empty():
            return
        command = todo.queue[0].command
        done: queue.Queue[ConfigOutcome | None] = queue.Queue()
        self._slots = [_Worker(command, self.cpus[i] if self.cpus else None) for i in range(self.workers)]

        def loop(worker: _Worker) -> None:
            _SLOT.worker = worker
            try:
                while not self._stop.is_set():
                    try:
                        config = todo.get_nowait()
                    except queue.Empty:
                        break
                    try:
                        done.put(fn(config))
                    except Cancelled:
                        break
            finally:
                worker.close()
                done.put(None)

        threads = [threading.Thread(target=loop, args=(w,), daemon=True) for w in self._slots]
        for t in threads:
            t.start()
        running = len(threads)
        try:
            while running:
                item = done.get()
                if item is None:
                    running -= 1
                else:
                    yield item
        finally:
            self.cancel()
            for t in threads:
                t.join()

    def cancel(self) -> None:
        self._stop.set()
        for worker in self._slots:
            with worker.lock:
                worker.cancelled = True
            worker.kill()


def make_executor(workers: int, cpus: list[tuple[int, ...]] | None = None) -> Executor:
    """The local executor the CLI runs a sweep with (`sweep --ray` takes `ray_exec.RayExecutor`,
    chosen in the CLI so that this module never imports the Ray one: no import cycle)."""
    return LocalExecutor(workers, cpus)


def bind(db: str | None, timeout_s: float) -> Callable[[SweepConfig], ConfigOutcome]:
    """`run_config` with its store and timeout bound: picklable (a partial of a top-level function)."""
    return functools.partial(run_config, db=db, timeout_s=timeout_s)
