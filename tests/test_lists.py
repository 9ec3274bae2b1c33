"""The one parser for comma-separated options (`--batch 1,8,32`, `--dtype fp32,bf16`)."""

from __future__ import annotations

import pytest

from modelmeter.analysis.llm import parse_batches as llm_batches
from modelmeter.cli.main import main
from modelmeter.core.errors import UserInputError
from modelmeter.core.lists import parse_batch_sizes, parse_list
from modelmeter.measure.sweep import parse_batches as sweep_batches


def test_parse_list_keeps_order_and_repeats_and_trims() -> None:
    assert parse_list(" fp32, bf16 ,fp32", option="--dtype", cast=str) == ["fp32", "bf16", "fp32"]
    assert parse_list("4", option="--batch", cast=int) == [4]


@pytest.mark.parametrize("text", ["", " ", "1,,2", ",1", "1,"])
def test_parse_list_names_the_option_and_an_example(text: str) -> None:
    with pytest.raises(UserInputError) as exc:
        parse_list(text, option="--dtype", cast=str, example="fp32,bf16")
    assert "--dtype fp32,bf16" in str(exc.value) and "comma-separated" in str(exc.value)


def test_parse_list_says_which_item_is_wrong_and_why() -> None:
    with pytest.raises(UserInputError) as exc:
        parse_list("1,x,3", option="--batch", cast=int, what="batch size", example="1,8,32")
    message = str(exc.value)
    assert "bad batch size 'x'" in message and "--batch 1,8,32" in message


@pytest.mark.parametrize("text, reason", [("1,x", "not an integer"), ("1.5", "not an integer"),
                                          ("8,0", "not a positive integer"),
                                          ("-4", "not a positive integer")])
def test_batch_sizes_give_the_reason(text: str, reason: str) -> None:
    with pytest.raises(UserInputError) as exc:
        parse_batch_sizes(text)
    assert reason in str(exc.value) and "bad batch size" in str(exc.value)


def test_batch_sizes_from_text_and_from_python_follow_one_rule() -> None:
    assert parse_batch_sizes("32, 1,8,8") == (32, 1, 8)  # order kept, repeats dropped
    assert parse_batch_sizes([32, 1, 8, 8]) == (32, 1, 8)
    assert parse_batch_sizes(["4", 2]) == (4, 2)
    for bad in ([True], [1.5], [0], [], ["x"]):
        with pytest.raises(UserInputError):
            parse_batch_sizes(bad)


def test_sweep_and_llm_share_the_parser() -> None:
    # The sweep sorts (its out-of-memory rule needs growing batches); the LLM view keeps order.
    assert sweep_batches("32,1,8,8") == [1, 8, 32]
    assert llm_batches("32,1,8,8") == (32, 1, 8)
    messages = []
    for parse in (sweep_batches, llm_batches, parse_batch_sizes):
        with pytest.raises(UserInputError) as exc:
            parse("1,x")
        messages.append(str(exc.value))
    assert len(set(messages)) == 1, messages


def test_llm_command_reports_the_bad_item(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["llm", "gpt2", "--hardware", "h100-sxm", "--batch", "1,,8"])
    err = capsys.readouterr().err
    assert exc.value.code == 2
    assert "Invalid value for '--batch': takes a comma-separated list like 1,8,32" in err
    assert "Traceback" not in err
