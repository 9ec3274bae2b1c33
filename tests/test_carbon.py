"""Carbon arithmetic, region lookup with aliases and suggestions, PUE."""

from __future__ import annotations

import pytest

from modelmeter.core.errors import UserInputError
from modelmeter.measure.carbon import (
    J_PER_KWH,
    carbon_g,
    carbon_intensity,
    list_regions,
    parse_pue,
)


def test_one_kwh_in_france() -> None:
    assert J_PER_KWH == 3.6e6
    assert carbon_g(3.6e6, "fr") == pytest.approx(56.0)
    assert carbon_g(1.8e6, "france", pue=1.5) == pytest.approx(42.0)


def test_default_region_is_world() -> None:
    assert carbon_g(3.6e6) == pytest.approx(480.0)
    assert carbon_g(0.0, "usa") == 0.0


@pytest.mark.parametrize("alias,key", [("France", "fr"), ("EU", "eu27"), ("united_kingdom", "uk"),
                                       ("US", "usa"), ("germany", "de"), ("gcp-montreal",
                                                                         "gcp-northamerica-northeast1")])
def test_aliases(alias: str, key: str) -> None:
    assert carbon_intensity(alias).region == key


def test_every_region_is_sourced() -> None:
    regions = list_regions()
    assert {"world", "usa", "eu27", "fr", "de"} <= {r.region for r in regions}
    for r in regions:
        assert r.g_per_kwh >= 0 and r.source


def test_unknown_region_suggests() -> None:
    with pytest.raises(UserInputError, match="france"):
        carbon_intensity("frnace")
    with pytest.raises(UserInputError, match="known regions"):
        carbon_g(1.0, "atlantis")


def test_bad_energy_and_pue() -> None:
    with pytest.raises(UserInputError):
        carbon_g(-1.0, "fr")
    with pytest.raises(UserInputError):
        carbon_g(1.0, "fr", pue=0.9)


def test_parse_pue() -> None:
    assert parse_pue("local") == 1.0
    assert parse_pue("industry") == pytest.approx(1.56)
    assert parse_pue("hyperscale") == pytest.approx(1.1)
    assert parse_pue("1.2") == pytest.approx(1.2)
    assert parse_pue(1.4) == pytest.approx(1.4)
    with pytest.raises(UserInputError):
        parse_pue("cheap")
    with pytest.raises(UserInputError):
        parse_pue("0.5")
