"""A sweep spec and its grid (pure: no process is started, nothing is measured).

A spec is a TOML file (YAML when PyYAML is installed) naming one command and the
values of each axis; the grid is the product of the axes, minus the exclusions::

    command = "report"                   # bench, report, plan or llm
    models = ["gpt2", "bert-base"]       # positional MODEL
    batches = [1, 8]                     # --batch
    sequences = [128]                    # --seq (llm: --prompt)
    precisions = ["fp32", "bf16"]        # --dtype
    hardware = ["h100-sxm"]              # --hardware
    devices = ["cpu"]                    # --device (plan: --devices, a device count)
    exclude = [{model = "bert-base", precision = "bf16"}]

    [options]                            # any other flag of the command
    measure = false                      # a bool: --measure / --no-measure (a flag: on or off)
    depth = [1, 2]                       # a list is one more axis of the grid

Every axis may be a single value or a list, and may be left out (the command's
default). `load_spec` validates everything (keys, command, models, hardware ids,
option names) before anything runs and raises `UserInputError` with one line.

Configuration hash: sha256 of the canonical JSON of ``{"format": "modelmeter.sweep/1",
"modelmeter": version, "command": ..., "args": [...]}`` where ``args`` is the command
line the grid point builds, in a fixed order (axes first, then options sorted by flag).
Nothing volatile is in it (no time, host, path of the store, worker count), so a rerun
of the same spec finds the same hashes; a new modelmeter version gives new hashes on
purpose, since its counting rules may differ and its results are not the same run's.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.errors import UserInputError

COMMANDS = ("bench", "report", "plan", "llm")
HASH_FORMAT = "modelmeter.sweep/1"

# axis key in the spec -> (key of a grid point, flag per command; None: the command has no such axis)
AXES: dict[str, tuple[str, dict[str, str | None]]] = {
    "models": ("model", {"bench": "", "report": "", "plan": "", "llm": ""}),  # "": positional
    "batches": ("batch", {"bench": "--batch", "report": "--batch", "plan": "--batch", "llm": "--batch"}),
    "sequences": ("sequence", {"bench": "--seq", "report": "--seq", "plan": "--seq", "llm": "--prompt"}),
    "precisions": ("precision", {"bench": "--dtype", "report": "--dtype", "plan": "--dtype", "llm": "--dtype"}),
    "hardware": ("hardware", {"bench": "--hardware", "report": "--hardware", "plan": "--hardware",
                              "llm": "--hardware"}),
    "devices": ("device", {"bench": "--device", "report": "--device", "plan": "--devices", "llm": None}),
}
SPEC_KEYS = ("command", *AXES, "options", "exclude")
# The sweep owns where results go: a per-configuration file or store would clash.
OWNED_FLAGS = ("--json", "--save", "--db", "--csv", "--md", "--html", "--plot", "--help")
_FLAG_RE = re.compile(r"^[a-z0-9][a-z0-9-]*$")

Scalar = str | int | float | bool


@dataclass(frozen=True)
class GridPoint:
    """One configuration of the grid: its key (for display and exclusions) and command line."""

    key: dict[str, Any]
    args: tuple[str, ...]
    measuring: bool


@dataclass(frozen=True)
class SweepSpec:
    command: str
    axes: dict[str, list[Scalar]]  # grid-point key -> values, in spec order
    flags: dict[str, str]  # grid-point key -> flag ("" = positional model)
    exclude: list[dict[str, list[Scalar]]] = field(default_factory=list)
    bool_flags: dict[str, tuple[str, str | None]] = field(default_factory=dict)  # key -> (on, off)

    def points(self) -> list[GridPoint]:
        """The grid: the product of the axes in spec order, exclusions dropped."""
        names = list(self.axes)
        out = []
        for values in itertools.product(*(self.axes[n] for n in names)):
            key = dict(zip(names, values, strict=True))
            if any(_matches(key, rule) for rule in self.exclude):
                continue
            out.append(GridPoint(key=key, args=self._args(key), measuring=_measuring(self.command, key)))
        return out

    def _args(self, key: dict[str, Any]) -> tuple[str, ...]:
        args: list[str] = []
        # Axes in a fixed order, then options by flag name: the same point always
        # gives the same command line, hence the same hash.
        ordered = [k for _, (k, _) in AXES.items() if k in key]
        ordered += sorted(k for k in key if k not in ordered)
        for name in ordered:
            value, flag = key[name], self.flags[name]
            if flag == "":
                args.insert(0, str(value))
            elif name in self.bool_flags:
                on, off = self.bool_flags[name]
                chosen = on if value else off
                if chosen:
                    args.append(chosen)
            else:
                args += [flag, _text(value)]
        return tuple(args)


def config_hash(command: str, args: Iterable[str], version: str | None = None) -> str:
    """The stable hash of one configuration (see the module docstring for what is in it)."""
    if version is None:
        version = _modelmeter_version()
    doc = {"format": HASH_FORMAT, "modelmeter": version, "command": command, "args": list(args)}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def load_spec(path: Path) -> SweepSpec:
    """Read and validate a spec file; every problem is one UserInputError line."""
    data = read_spec_file(path)
    return parse_spec(data, where=str(path))


def read_spec_file(path: Path) -> dict[str, Any]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise UserInputError(f"cannot read sweep spec {path}: {exc.strerror or exc}") from exc
    suffix = path.suffix.lower()
    if suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError as exc:
            raise UserInputError(f"{path} is YAML, which needs PyYAML (`pip install pyyaml`); "
                                 "or write the spec as TOML") from exc
        try:
            data = yaml.safe_load(raw.decode("utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise UserInputError(f"{path} is not valid YAML: {_first_line(exc)}") from exc
    else:
        toml = _toml_module()
        try:
            data = toml.loads(raw.decode("utf-8"))
        except (toml.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise UserInputError(f"{path} is not valid TOML: {_first_line(exc)}") from exc
    if not isinstance(data, dict):
        raise UserInputError(f"{path}: a sweep spec is a table of keys ({', '.join(SPEC_KEYS)})")
    return data


def parse_spec(data: dict[str, Any], where: str = "spec") -> SweepSpec:
    unknown = sorted(set(data) - set(SPEC_KEYS))
    if unknown:
        raise UserInputError(f"{where}: unknown key {unknown[0]!r}; a sweep spec has {', '.join(SPEC_KEYS)}")
    command = data.get("command")
    if command not in COMMANDS:
        raise UserInputError(f"{where}: command must be one of {', '.join(COMMANDS)}, not {command!r}")
    params = _command_params(command)
    axes: dict[str, list[Scalar]] = {}
    flags: dict[str, str] = {}
    for spec_key, (name, per_command) in AXES.items():
        if spec_key not in data:
            continue
        flag = per_command[command]
        if flag is None:
            raise UserInputError(f"{where}: `{command}` has no {spec_key} axis; drop the key")
        values = _values(data[spec_key], f"{where}: {spec_key}")
        check = _AXIS_CHECKS.get(name)
        for value in values:
            if check is not None:
                check(value, where)
        axes[name], flags[name] = values, flag
    if "model" not in axes:
        raise UserInputError(f"{where}: models is required (a list of model specs)")
    taken = {flag for flag in flags.values() if flag}
    bool_flags: dict[str, tuple[str, str | None]] = {}
    options = data.get("options", {})
    if not isinstance(options, dict):
        raise UserInputError(f"{where}: options is a table of flag = value (or list of values)")
    for raw_flag, raw_values in options.items():
        flag = "--" + str(raw_flag).lstrip("-")
        name = flag[2:]
        if not _FLAG_RE.match(name):
            raise UserInputError(f"{where}: option {raw_flag!r} is not a flag name such as min-time")
        if flag in OWNED_FLAGS:
            raise UserInputError(f"{where}: option {flag} is set by the sweep itself (results go to the store); "
                                 "drop it")
        if flag in taken or name in axes:
            axis = next(k for k, (n, pc) in AXES.items() if pc.get(command) == flag or n == name)
            raise UserInputError(f"{where}: option {flag} is the {axis} axis; list its values under {axis}")
        param = params.get(flag)
        if param is None:
            raise UserInputError(f"{where}: `modelmeter {command}` has no option {flag} "
                                 f"(`modelmeter {command} --help` lists them)")
        values = _values(raw_values, f"{where}: options.{name}")
        on, off, is_bool = param
        if is_bool:
            bad = [v for v in values if not isinstance(v, bool)]
            if bad:
                raise UserInputError(f"{where}: options.{name} is a switch: true or false, not {bad[0]!r}")
            bool_flags[name] = (on, off)
        elif any(isinstance(v, bool) for v in values):
            raise UserInputError(f"{where}: options.{name} takes a value, not true/false")
        axes[name], flags[name] = values, flag
    exclude = _exclusions(data.get("exclude", []), axes, where)
    return SweepSpec(command=command, axes=axes, flags=flags, exclude=exclude, bool_flags=bool_flags)


# -- helpers -------------------------------------------------------------------


def _values(raw: Any, what: str) -> list[Scalar]:
    values = raw if isinstance(raw, list) else [raw]
    if not values:
        raise UserInputError(f"{what} is empty; give at least one value or drop the key")
    for value in values:
        if not isinstance(value, (str, int, float, bool)) or (isinstance(value, str) and not value.strip()):
            raise UserInputError(f"{what}: {value!r} is not a value (a string, number or true/false)")
    if len({json.dumps(v) for v in values}) != len(values):
        raise UserInputError(f"{what} lists a value twice")
    return list(values)


def _exclusions(raw: Any, axes: dict[str, list[Scalar]], where: str) -> list[dict[str, list[Scalar]]]:
    if not isinstance(raw, list) or not all(isinstance(rule, dict) and rule for rule in raw):
        raise UserInputError(f"{where}: exclude is a list of tables such as {{model = \"gpt2\", batch = 8}}")
    rules = []
    for rule in raw:
        parsed = {}
        for key, values in rule.items():
            name = str(key).lstrip("-")
            if name not in axes:
                raise UserInputError(f"{where}: exclude names {key!r}, which is not an axis of this grid "
                                     f"({', '.join(axes)})")
            parsed[name] = _values(values, f"{where}: exclude.{name}")
        rules.append(parsed)
    return rules


def _matches(key: dict[str, Any], rule: dict[str, list[Scalar]]) -> bool:
    # json.dumps compares true with true, not with 1 (True == 1 in Python).
    return all(json.dumps(key[name]) in {json.dumps(v) for v in values} for name, values in rule.items())


def _measuring(command: str, key: dict[str, Any]) -> bool:
    """Whether the configuration times anything here (and so needs a core or GPU to itself)."""
    if command == "bench":
        return True
    if command == "report":
        # report measures by default on a CPU device; --no-measure and meta do not.
        off = key.get("measure", True) is False or key.get("no-measure", False) is True
        return not off and key.get("device", "cpu") != "meta"
    if command == "llm":
        return key.get("measure", False) is True
    return False


def _text(value: Scalar) -> str:
    return repr(value) if isinstance(value, float) else str(value)


def _check_model(value: Scalar, where: str) -> None:
    from ..core.errors import UnknownModelError
    from ..presets import preset_names
    from ..sources import hub
    from ..sources.resolve import _FACTORY_RE, _unknown_message

    spec = str(value).strip()
    path = Path(spec)
    known = (
        spec in preset_names()
        or spec.startswith(("torchvision:", "timm:"))
        or (spec.endswith(".pt2") and path.is_file())
        or (path.is_dir() and (path / "config.json").is_file())
        or bool(_FACTORY_RE.match(spec))
        or hub.looks_like_hub_id(spec)
    )
    if not known:
        raise UnknownModelError(f"{where}: {_unknown_message(spec)}")


def _check_hardware(value: Scalar, where: str) -> None:
    from ..hardware import get_hardware

    try:
        get_hardware(str(value))
    except UserInputError as exc:
        raise UserInputError(f"{where}: {_first_line(exc)}") from exc


def _check_positive_int(value: Scalar, where: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserInputError(f"{where}: batches and sequences are whole numbers >= 1, not {value!r}")


def _check_text(value: Scalar, where: str) -> None:
    if not isinstance(value, (str, int)) or isinstance(value, bool):
        raise UserInputError(f"{where}: {value!r} is not a name")


_AXIS_CHECKS = {"model": _check_model, "hardware": _check_hardware, "batch": _check_positive_int,
                "sequence": _check_positive_int, "precision": _check_text, "device": _check_text}


def _command_params(command: str) -> dict[str, tuple[str, str | None, bool]]:
    """flag -> (on form, off form or None, is a switch) of every option of `modelmeter COMMAND`."""
    import importlib

    from ..cli.main import COMMANDS as CLI_COMMANDS

    module_name, attr = CLI_COMMANDS[command].split(":")
    cmd = getattr(importlib.import_module(module_name), attr)
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


def _toml_module() -> Any:
    try:
        import tomllib  # Python 3.11+
    except ImportError:
        try:
            import tomli as tomllib  # the same parser, for Python 3.10
        except ImportError as exc:
            raise UserInputError("TOML sweep specs need Python 3.11+ or the tomli package "
                                 "(`pip install tomli`)") from exc
    return tomllib


def _modelmeter_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("modelmeter")
    except metadata.PackageNotFoundError:
        return "unknown"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return " ".join(text.splitlines()[0].split()) if text else type(exc).__name__
