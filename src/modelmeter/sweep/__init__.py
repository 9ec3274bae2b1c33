"""Sweeps: a grid of configurations run one process each, results in the run store.

`spec` reads a spec file and builds the grid (pure); `run` holds the executor
interface (`SweepConfig`, `run_config`, `ConfigOutcome`, `Executor`,
`LocalExecutor`, `make_executor`); `worker` is the child process.
"""
