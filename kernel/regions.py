"""Data regions: where a tenant's (or a key's) requests may run, as one rule every app uses.

A region is an operator's label for where a hive stands ("eu", "eu-west", "us"). Regions
nest by a dash: "eu-west" and "eu-west-1" lie within "eu", "eu" does not lie within
"eu-west", and "europe" does not lie within "eu" (no bare prefixes). "" as a *constraint*
means anywhere; "" as a *hive's* region means unknown, which lies within no constraint:
an unlabelled hive never serves a tenant with a data region (residency fails closed).

Only the operator's label counts (hives.models.Hive.region), never what a hive says of
itself (`reported_region`): a hive could otherwise pull requests out of their region.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

# Lower-case labels joined by dashes: "eu", "eu-west-1", "us-east".
_REGION = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
MAX_LEN = 32  # hives.models.Hive.region's length


class RegionError(ValueError):
    """A region label that is not one (upper case, spaces, empty parts, too long)."""


def normalise(region: str) -> str:
    """The canonical form of a region label ("" stays ""), or RegionError."""
    text = (region or "").strip().lower()
    if text and (len(text) > MAX_LEN or not _REGION.match(text)):
        raise RegionError(
            f"not a region: {region!r} (lower-case letters and digits joined by dashes, "
            f"e.g. 'eu' or 'eu-west', at most {MAX_LEN} characters)"
        )
    return text


def within(region: str, area: str) -> bool:
    """Whether a hive labelled `region` lies within the constraint `area` ("" = anywhere)."""
    if not area:
        return True
    if not region:
        return False
    return region == area or region.startswith(area + "-")


def within_all(region: str, areas: Iterable[str]) -> bool:
    """Whether `region` lies within every constraint (a tenant's and its key's)."""
    return all(within(region, a) for a in areas)


def narrowest(areas: Iterable[str]) -> str:
    """The one region a set of nested constraints amounts to ("" if none). Constraints
    that do not nest (a key's "us" under a tenant's "eu") have no such region: RegionError,
    and whoever routes must then fail closed (within_all() is false for every hive)."""
    best = ""
    for area in areas:
        if not area:
            continue
        if within(area, best):
            best = area
        elif not within(best, area):
            raise RegionError(f"the regions {best!r} and {area!r} do not overlap")
    return best
