"""`modelmeter sweep --ray ADDRESS|auto`: the grid as Ray tasks on an existing Ray cluster.

Each configuration is one Ray task running `run_config` (the same function the local
executor runs), so the worker, not this process, runs the command and saves its row
into the store. Resources each task asks for:

- an analysis configuration: ``num_cpus=1`` (Ray then sets OMP_NUM_THREADS=1 for it, so
  N tasks on an N-CPU node never oversubscribe it; counts do not depend on threads);
- a measuring GPU configuration (device cuda): ``num_gpus=1, num_cpus=1``; Ray sets
  CUDA_VISIBLE_DEVICES to the GPU it gave, so two never share a GPU;
- a measuring CPU configuration: every CPU of the largest node (``num_cpus`` = its CPU
  count), so nothing else this sweep runs shares a core with a timing.

``max_retries=0``: a worker that dies mid-task is recorded as a failed configuration
(its one-line error names Ray's exception) and not stored, so the rerun of the sweep runs
exactly it again; a silent retry would re-run a configuration that kills its worker (OOM)
again and again. The other tasks go on.

A SQLite store is one machine's file (WAL mode needs shared memory, which a network
filesystem does not give): with a SQLite store every alive node must be this machine;
a cluster of several machines needs ``--db postgresql://...``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from ..core.errors import UserInputError

if TYPE_CHECKING:  # run imports this module when --ray is given: no cycle at run time
    from .run import ConfigOutcome, SweepConfig

__all__ = ["MAX_RETRIES", "RayExecutor", "task_resources"]

MAX_RETRIES = 0


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise UserInputError("--ray needs Ray: install modelmeter[ray] (pip install 'modelmeter[ray]')") from None
    return ray


def task_resources(config: SweepConfig, node_cpus: float) -> dict[str, float]:
    """The Ray resources one configuration asks for (see the module docstring)."""
    if not config.measuring:
        return {"num_cpus": 1}
    device = str(config.key.get("device") or "cpu")
    if device.startswith("cuda"):
        return {"num_cpus": 1, "num_gpus": 1}
    return {"num_cpus": max(1.0, node_cpus)}


def _check_reachable(address: str) -> None:
    """One TCP connect first: ray.init retries an unreachable GCS for many minutes."""
    import socket

    if address == "auto" or "://" in address:
        return
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=5).close()
    except (OSError, ValueError) as exc:
        raise UserInputError(f"--ray {address}: no Ray cluster answers there ({exc}); "
                             "start one with `ray start --head` or pass its ADDRESS") from None


def _call(fn: Callable[[SweepConfig], ConfigOutcome], config: SweepConfig) -> ConfigOutcome:
    return fn(config)


class RayExecutor:
    """Runs configurations as Ray tasks on the cluster at `address` ('auto': the one running here)."""

    def __init__(self, address: str, db: str | None = None) -> None:
        ray = _ray()
        self._ray = ray
        _check_reachable(address)
        try:
            ray.init(address=address, log_to_driver=False, logging_level="ERROR",
                     configure_logging=True, ignore_reinit_error=True)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            raise UserInputError(f"--ray {address}: cannot reach a Ray cluster there "
                                 f"({' '.join(str(exc).split())[:200]})") from None
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        self.node_cpus = max((float(n.get("Resources", {}).get("CPU", 0)) for n in nodes), default=1.0)
        if db is not None and "://" not in db:
            here = ray.util.get_node_ip_address()
            others = sorted({n["NodeManagerAddress"] for n in nodes} - {here})
            if others:
                raise UserInputError(
                    f"--db {db}: a SQLite store is this machine's file, and the Ray cluster has nodes "
                    f"on {', '.join(others)}; use --db postgresql://... for a cluster of several machines")
        self._pending: dict[Any, SweepConfig] = {}

    def submit_all(self, configs: Iterable[SweepConfig],
                   fn: Callable[[SweepConfig], ConfigOutcome]) -> Iterator[ConfigOutcome]:
        from .run import ConfigOutcome

        ray = self._ray
        remote = ray.remote(_call)  # ray.remote takes a function, not the partial `fn` is
        started: dict[Any, float] = {}
        for config in configs:
            ref = remote.options(max_retries=MAX_RETRIES, name=f"modelmeter-sweep-{config.config_hash[:12]}",
                                 **task_resources(config, self.node_cpus)).remote(fn, config)
            self._pending[ref] = config
            started[ref] = time.monotonic()
        while self._pending:
            ready, _ = ray.wait(list(self._pending), num_returns=1)
            ref = ready[0]
            config = self._pending.pop(ref)
            try:
                yield ray.get(ref)
            except ray.exceptions.TaskCancelledError:
                continue  # cancelled: nothing recorded, a rerun runs it
            except ray.exceptions.RayError as exc:
                first = (str(exc).strip().splitlines() or [""])[0]
                yield ConfigOutcome(config.config_hash, False, None,
                                    f"Ray task failed ({type(exc).__name__}): {first[:200]}",
                                    time.monotonic() - started[ref])

    def cancel(self) -> None:
        for ref in list(self._pending):
            self._ray.cancel(ref)
