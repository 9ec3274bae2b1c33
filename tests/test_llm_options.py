"""The llm options are checked once, where `LLMOptions` is built: the CLI, `modelmeter.llm` and
`measure_llm_costs` all go through it, before any model is built or traced."""

from __future__ import annotations

import pytest

import modelmeter
from modelmeter.core.errors import UserInputError
from modelmeter.pipeline import llm_trace

BAD = [
    # (CLI flags, API keywords, the field named, the flag the CLI prints)
    (("--prompt", "0"), {"prompt": 0}, "prompt", "--prompt must be a positive whole number"),
    (("--gen", "-3"), {"gen": -3}, "gen", "--gen must be a positive whole number"),
    (("--prompt", "4294967296"), {"prompt": 2**32}, "prompt", "--prompt 4294967296 is too large"),
    (("--dtype", "int4"), {"dtype": "int4"}, "dtype", "--dtype int4 is not a precision a model runs"),
    (("--rate", "-1"), {"batches": (1, 0)}, None, None),
]


@pytest.fixture
def no_trace(monkeypatch):
    """Building the decoder fails the test: a bad option must be refused before it."""
    built = []

    def refuse(*args, **kwargs):
        built.append(args)
        raise AssertionError("the model was built before the options were checked")

    monkeypatch.setattr(llm_trace, "DecoderTracer", refuse)
    return built


@pytest.mark.parametrize("flags, _kw, field, line", [b for b in BAD if b[3]])
def test_a_bad_llm_option_is_one_line_naming_its_flag_and_exit_2(run_main, no_trace, flags, _kw, field, line):
    code, out, err = run_main("llm", "gpt2", "--hardware", "h100-sxm", *flags)
    assert code == 2 and out == "" and not no_trace
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"modelmeter: error: {line}"), lines


@pytest.mark.parametrize("_flags, keywords, field, _line", [b for b in BAD if b[2]])
def test_the_library_raises_the_typed_error_once_naming_the_field(no_trace, _flags, keywords, field, _line):
    calls = []
    original = UserInputError.__init__

    def count(self, *args, **kwargs):
        calls.append(args)
        original(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(UserInputError, "__init__", count)
        with pytest.raises(UserInputError) as exc:
            modelmeter.llm("gpt2", hardware="h100-sxm", **keywords)
    assert field in exc.value.fields and f"`{field}`" in str(exc.value)
    assert "--" not in str(exc.value)  # the library names no flag
    assert len(calls) == 1 and not no_trace  # raised once, before the model


def test_measure_llm_costs_checks_through_the_same_options(no_trace):
    with pytest.raises(UserInputError) as exc:
        llm_trace.measure_llm_costs("gpt2", prompt=0)
    assert exc.value.fields == ("prompt",) and not no_trace


def test_a_bad_batch_from_python_is_refused_before_the_model(no_trace):
    with pytest.raises(UserInputError, match="bad batch size 0"):
        modelmeter.llm("gpt2", hardware="h100-sxm", batches=(1, 0))
    assert not no_trace


def test_a_field_the_command_lacks_stays_as_the_library_wrote_it():
    from modelmeter.cli.flags import with_flags

    exc = UserInputError("`ttft_target_s` must be a positive number", field="ttft_target_s")
    assert with_flags(exc, frozenset({"--ttft-target"})) == "--ttft-target must be a positive number"
    assert with_flags(exc, frozenset({"--prompt"})) == "`ttft_target_s` must be a positive number"
