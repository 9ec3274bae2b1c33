"""A `Report` is immutable all the way down; `to_dict()` is a fresh mutable copy.

Before, the dataclass was frozen over plain dicts and lists: `report.totals["flops"] = 0`
silently changed a report other code had already read (the HTML view, a saved run).
"""

from __future__ import annotations

import copy
import json
import pickle

import pytest
import torch

import modelmeter
from modelmeter import Report


@pytest.fixture(scope="module")
def report() -> Report:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
    return modelmeter.roofline(model, (torch.randn(2, 8),), hardware="h100-sxm")


@pytest.mark.parametrize("mutate", [
    lambda r: r.totals.__setitem__("flops", 0),
    lambda r: r.totals["by_operator"][0].__setitem__("flops", 0),
    lambda r: r.modules[0].__setitem__("params", 0),
    lambda r: r.modules.append({}),
    lambda r: r.settings["inputs"][0]["shape"].append(3),
    lambda r: r.roofline.__setitem__("latency_s", 0.0),
    lambda r: r.methods.pop("flops"),
    lambda r: r.model.update(name="other"),
    lambda r: setattr(r, "totals", {}),
], ids=["totals", "operator row", "module row", "modules", "input shape", "roofline", "methods",
        "model", "attribute"])
def test_changing_what_a_report_holds_raises(report: Report, mutate) -> None:
    before = report.to_dict()
    with pytest.raises((TypeError, AttributeError)):
        mutate(report)
    assert report.to_dict() == before


def test_to_dict_is_a_fresh_plain_copy(report: Report) -> None:
    data = report.to_dict()
    assert type(data["totals"]) is dict and type(data["modules"]) is list
    assert type(data["settings"]["inputs"][0]["shape"]) is list
    data["totals"]["flops"] = -1
    data["modules"].clear()
    assert report.totals["flops"] > 0 and report.modules
    json.dumps(report.to_dict())  # plain JSON data


def test_the_inputs_of_a_report_are_copied(report: Report) -> None:
    data = report.to_dict()
    rebuilt = Report.from_dict(data)
    data["totals"]["flops"] = -1  # the caller's dict, changed afterwards
    assert rebuilt.totals["flops"] == report.totals["flops"]
    assert rebuilt == report


def test_a_report_pickles_and_deep_copies(report: Report) -> None:
    assert pickle.loads(pickle.dumps(report)) == report
    assert copy.deepcopy(report) == report
