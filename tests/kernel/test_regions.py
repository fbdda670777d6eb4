"""Regions nest by a dash; an unlabelled hive lies within no constraint."""

from __future__ import annotations

import pytest

from kernel import regions


@pytest.mark.parametrize(
    ("region", "area", "inside"),
    [
        ("eu", "", True),
        ("", "", True),
        ("", "eu", False),  # unlabelled: never residency-safe
        ("eu", "eu", True),
        ("eu-west", "eu", True),
        ("eu-west-1", "eu", True),
        ("eu", "eu-west", False),
        ("europe", "eu", False),  # no bare prefixes
        ("us", "eu", False),
        ("us-eu", "eu", False),
    ],
)
def test_within(region: str, area: str, inside: bool) -> None:
    assert regions.within(region, area) is inside


def test_narrowest_takes_the_inner_region_and_refuses_disjoint_ones() -> None:
    assert regions.narrowest([]) == ""
    assert regions.narrowest(["eu", "", "eu-west"]) == "eu-west"
    assert regions.narrowest(["eu-west", "eu"]) == "eu-west"
    with pytest.raises(regions.RegionError, match="do not overlap"):
        regions.narrowest(["eu", "us"])
    assert not regions.within_all("eu", ["eu", "us"])
    assert not regions.within_all("us", ["eu", "us"])


@pytest.mark.parametrize("bad", ["EU WEST", "eu_west", "-eu", "eu-", "eu--west", "x" * 33, "é"])
def test_normalise_refuses_what_is_not_a_label(bad: str) -> None:
    with pytest.raises(regions.RegionError):
        regions.normalise(bad)


def test_normalise_lowercases_and_strips() -> None:
    assert regions.normalise(" EU-West ") == "eu-west"
    assert regions.normalise("") == ""
