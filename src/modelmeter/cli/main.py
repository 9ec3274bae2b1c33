"""The `modelmeter` command (layer 7): parse, call the pipeline, render; the error boundary.

Subcommands live one module each and are imported only when used, so
`modelmeter --help` and commands that need no torch start fast.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
import warnings
from collections.abc import Iterator
from typing import Any

import click

from ..core.errors import UserInputError

# command name -> "module:attribute" of its click command, imported lazily.
COMMANDS: dict[str, str] = {
    "count": "modelmeter.cli.count_cmd:count",
    "models": "modelmeter.cli.count_cmd:models",
    "memory": "modelmeter.cli.memory_cmd:memory",
    "hardware": "modelmeter.cli.hardware_cmd:hardware",
    "roofline": "modelmeter.cli.roofline_cmd:roofline",
    "bench": "modelmeter.cli.bench_cmd:bench",
    "llm": "modelmeter.cli.llm_cmd:llm",
    "plan": "modelmeter.cli.plan_cmd:plan",
    "report": "modelmeter.cli.report_cmd:report",
    "compare": "modelmeter.cli.report_cmd:compare",
    "history": "modelmeter.cli.store_cmd:history",
    "diff": "modelmeter.cli.store_cmd:diff",
    "validate": "modelmeter.cli.validate_cmd:validate",
    "sweep": "modelmeter.cli.sweep_cmd:sweep",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        return getattr(importlib.import_module(module_name), attr)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="modelmeter")
@click.option("--debug", is_flag=True, help="Show full tracebacks instead of one-line errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """How efficient is a PyTorch model? Parameters, MACs/FLOPs, memory, latency, energy."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug or bool(os.environ.get("MODELMETER_DEBUG"))


def main(argv: list[str] | None = None) -> None:
    """Console entry point: every UserInputError becomes one line on stderr and exit 2.

    Out-of-memory is bad input too (a model or batch too big for this machine):
    one line that says what to do, never a traceback.
    """
    args = argv if argv is not None else sys.argv[1:]
    debug = "--debug" in args or bool(os.environ.get("MODELMETER_DEBUG"))
    try:
        with _warning_lines():
            rc = cli.main(args=argv, prog_name="modelmeter", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("modelmeter: interrupted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        # Usage errors (unknown option, bad value) are bad input too: one line, exit 2.
        click.echo(f"modelmeter: error: {_one_line(exc.format_message())}", err=True)
        sys.exit(2)
    except UserInputError as exc:
        if debug:
            raise
        click.echo(f"modelmeter: error: {_one_line(exc.text(command_options(args)))}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        click.echo("modelmeter: interrupted", err=True)
        sys.exit(130)
    except (MemoryError, RuntimeError) as exc:
        if debug or not _out_of_memory(exc):
            raise
        click.echo(f"modelmeter: error: {_oom_message(exc, args)}", err=True)
        sys.exit(2)
    # With standalone_mode=False click returns ctx.exit()'s code instead of exiting.
    if isinstance(rc, int) and rc != 0:
        sys.exit(rc)


@contextlib.contextmanager
def _warning_lines() -> Iterator[None]:
    """modelmeter's own warnings (a profile set aside) as one 'modelmeter: warning:' line each."""
    from ..hardware.plausible import ProfileSetAside

    with warnings.catch_warnings():  # restores the filters and showwarning on the way out
        warnings.simplefilter("always", ProfileSetAside)
        shown = warnings.showwarning

        def show(message: Warning | str, category: type[Warning], *rest: Any, **kw: Any) -> None:
            if issubclass(category, ProfileSetAside):
                click.echo(f"modelmeter: warning: {_one_line(str(message))}", err=True)
            else:
                shown(message, category, *rest, **kw)

        warnings.showwarning = show
        yield


def invoked_command(args: list[str]) -> click.Command | None:
    """The (sub)command `args` invoke (`hardware calibrate` -> calibrate), or None if unknown."""
    command: click.Command = cli
    try:
        for token in args:
            if token.startswith("-"):
                continue
            if not isinstance(command, click.Group):
                break
            sub = command.get_command(click.Context(command), token)
            if sub is None:
                return None
            command = sub
    except Exception:  # noqa: BLE001 - only advice depends on it; never mask the real error
        return None
    return None if command is cli else command


def command_options(args: list[str]) -> frozenset[str] | None:
    """What the command `args` invoke accepts: its flags ('--json') and, for options
    with a fixed set of values, each flag with its value ('--device meta'); None if unknown."""
    command = invoked_command(args)
    if command is None:
        return None
    accepted: set[str] = set()
    for param in command.params:
        for opt in (*param.opts, *param.secondary_opts):
            accepted.add(opt)
            accepted.update(f"{opt} {choice}" for choice in getattr(param.type, "choices", ()))
    return frozenset(accepted)


def _one_line(text: str) -> str:
    # The contract is one line on stderr: newlines inside a message (a quoted
    # file name, a library's multi-line text) would break it.
    return " ".join(str(text).split())


def _out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return True
    text = str(exc).lower()
    return any(s in text for s in ("out of memory", "can't allocate memory", "cannot allocate memory"))


def _oom_message(exc: BaseException, args: list[str]) -> str:
    """What ran out, and only the remedies the invoked command offers."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    accepted = command_options(args) or frozenset()
    advice = []
    if "--device meta" in accepted:
        advice.append("use the meta device (--device meta: nothing is allocated)")
    if "--batch" in accepted:
        advice.append("lower --batch" + ("/--seq" if "--seq" in accepted else ""))
    if "--dtype" in accepted:
        advice.append("use --dtype bf16 or fp16")
    advice = advice or ["use a machine with more memory"]
    return _one_line(f"out of memory ({first}); " + ", or ".join(advice))


if __name__ == "__main__":
    main()
