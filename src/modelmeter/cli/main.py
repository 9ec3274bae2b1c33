"""The `modelmeter` command (layer 7): parse, call the pipeline, render; the error boundary.

Subcommands live one module each and are imported only when used, so
`modelmeter --help` and commands that need no torch start fast.
"""

from __future__ import annotations

import importlib
import os
import sys

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
    "report": "modelmeter.cli.report_cmd:report",
    "compare": "modelmeter.cli.report_cmd:compare",
    "history": "modelmeter.cli.store_cmd:history",
    "diff": "modelmeter.cli.store_cmd:diff",
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
    """Console entry point: every UserInputError becomes one line on stderr and exit 2."""
    debug = "--debug" in (argv if argv is not None else sys.argv[1:]) or bool(
        os.environ.get("MODELMETER_DEBUG")
    )
    try:
        rc = cli.main(args=argv, prog_name="modelmeter", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("modelmeter: interrupted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        # Usage errors (unknown option, bad value) are bad input too: one line, exit 2.
        click.echo(f"modelmeter: error: {exc.format_message()}", err=True)
        sys.exit(2)
    except UserInputError as exc:
        if debug:
            raise
        click.echo(f"modelmeter: error: {exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        click.echo("modelmeter: interrupted", err=True)
        sys.exit(130)
    # With standalone_mode=False click returns ctx.exit()'s code instead of exiting.
    if isinstance(rc, int) and rc != 0:
        sys.exit(rc)


if __name__ == "__main__":
    main()
