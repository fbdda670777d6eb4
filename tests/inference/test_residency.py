"""EU-only routing fails closed: over random fleets and random route_task scripts (some
of which name a worker outside the caller's region), an EU caller's request is only ever
routed to a hive the operator placed in the EU, or refused with 503 + Retry-After; the
dispatcher's retries keep to the region too."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from channels.layers import get_channel_layer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hives.selectors import Placement
from inference import pipeline
from inference.dispatch import Job
from inference.errors import APIError
from inference.scheduler import Policy, task_map
from tenants.selectors import Caller

REGIONS = ["", "eu", "eu-west", "eu-central-1", "europe", "us", "us-east", "apac", "euro-1"]
MODELS = ["m1", "m2"]


def in_eu(region: str) -> bool:
    """The oracle, written apart from kernel.regions on purpose."""
    return region == "eu" or region.startswith("eu-")


def caller(*data_regions: str) -> Caller:
    return Caller(
        tenant_id=1,
        tenant_name="acme",
        tier="free",
        api_key_id=1,
        api_key_prefix="abcd",
        data_regions=data_regions,
    )


@st.composite
def fleets(draw: Any) -> list[Placement]:
    n = draw(st.integers(min_value=1, max_value=12))
    out = []
    for i in range(n):
        out.append(
            Placement(
                worker_id=100 + i,
                hive_id=i // 2 + 1,
                hive_name=f"hive{i // 2}",
                channel_name=f"chan{i}",
                device=f"cuda:{i % 2}",
                inflight=draw(st.integers(0, 5)),
                region=draw(st.sampled_from(REGIONS)),
                vram_free_mb=draw(st.integers(0, 80_000)),
                vram_total_mb=80_000,
                model=draw(st.sampled_from(MODELS)),
            )
        )
    return out


def scripts(ids: list[int]) -> st.SearchStrategy[str]:
    """route_task scripts: honest ones, ones that return unit or fail, and ones that return
    a worker the caller may not use (a made-up map with a non-EU worker's id, a real map
    relabelled "eu")."""
    head = "fn route_task(task, workers) {"
    any_id = st.sampled_from(ids)
    return st.one_of(
        st.integers(0, 20).map(lambda i: f"{head} workers[{i} % workers.len()] }}"),
        any_id.map(lambda i: f'{head} #{{id: {i}, region: "eu"}} }}'),
        any_id.map(lambda i: f'{head} let w = workers[0]; w.id = {i}; w.region = "eu"; w }}'),
        st.just(f"{head} () }}"),
        st.just(f'{head} throw "no" }}'),
        st.just(
            f"{head} let b = workers[0]; for w in workers {{ if w.load > b.load {{ b = w }} }} b }}"
        ),
        st.sampled_from(REGIONS).map(
            lambda r: f'{head} for w in workers {{ if w.region == "{r}" {{ return w; }} }} () }}'
        ),
        st.just(f"{head} loop {{ }} }}"),  # runs into its limits: the default decides
    )


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_a_non_eu_worker_is_never_chosen_for_an_eu_caller(data: Any) -> None:
    fleet = data.draw(fleets())
    who = caller(
        *data.draw(st.sampled_from([("eu",), ("eu", "eu-west"), ("eu", ""), ("eu-west",)]))
    )
    header = data.draw(st.sampled_from(["", "eu", "eu-west", "us", "apac"]))
    script = data.draw(scripts([p.worker_id for p in fleet]))
    model = data.draw(st.sampled_from(MODELS))
    load = {p.worker_id: data.draw(st.integers(0, 9)) for p in fleet}
    placements = [p for p in fleet if p.model == model]
    target: Any = SimpleNamespace(model=SimpleNamespace(name=model), caller=who)

    try:
        constraints = pipeline.residency(who, header)
    except APIError as exc:  # a header may narrow the caller's region, never leave it
        assert exc.status == 400 and exc.code == "region_not_allowed"
        assert header and not in_eu(header)
        return
    try:
        eligible = pipeline._eligible(target, constraints, placements)
    except APIError as exc:  # fails closed: nothing in the region
        assert exc.status == 503 and exc.headers["Retry-After"]
        assert exc.code == "region_unavailable"
        assert not [p for p in placements if pipeline.regions.within_all(p.region, constraints)]
        return
    assert eligible and all(in_eu(p.region) for p in eligible)
    task = task_map(
        type="text-gen",
        model=model,
        priority="interactive",
        tier="free",
        tenant="acme",
        region=pipeline._describe(constraints),
        size=1,
    )
    chosen, source = asyncio.run(
        pipeline.route_in_region(Policy(script, max_time=0.05), task, eligible, constraints, load)
    )
    assert in_eu(chosen.region), (script, chosen)
    assert chosen in eligible and source in ("script", "default")
    if who.data_regions == ("eu-west",) or header == "eu-west":
        assert chosen.region.startswith("eu-west")


def test_confine_overrules_a_choice_outside_the_region() -> None:
    eu = Placement(1, 1, "eu-hive", "c1", "cpu", 0, region="eu")
    us = Placement(2, 2, "us-hive", "c2", "cpu", 0, region="us")
    assert pipeline.confine(us, [eu, us], ("eu",), {}) == (eu, False)
    assert pipeline.confine(eu, [eu], ("eu",), {}) == (eu, True)
    # A worker in the region but not among the eligible ones is overruled as well.
    eu2 = Placement(3, 3, "eu-2", "c3", "cpu", 0, region="eu")
    assert pipeline.confine(eu2, [eu], ("eu",), {}) == (eu, False)


def test_a_key_outside_a_changed_tenant_region_fails_closed() -> None:
    # The tenant moved to "us" after its key was made "eu": both hold, so nothing serves.
    who = caller("us", "eu")
    fleet = [Placement(1, 1, "a", "c", "cpu", 0, region=r) for r in ("eu", "us", "")]
    target: Any = SimpleNamespace(model=SimpleNamespace(name="m"), caller=who)
    with pytest.raises(APIError) as err:
        pipeline._eligible(target, pipeline.residency(who, ""), fleet)
    assert err.value.status == 503 and err.value.headers == {"Retry-After": "5"}


@pytest.fixture
def fast(settings: Any) -> None:
    settings.RBEE_DISPATCH_ACK_TIMEOUT = 0.3
    settings.RBEE_DISPATCH_TRIES = 3
    settings.RBEE_JOB_IDLE_TIMEOUT = 0.5


@pytest.mark.asyncio
@pytest.mark.usefixtures("fast")
async def test_retries_never_leave_the_region() -> None:
    """The EU hive takes no job (it is gone); a refresh offers a live US hive, which must
    not receive it: 503 + Retry-After, nothing sent to the US channel."""
    layer = get_channel_layer()
    dead_eu = await layer.new_channel()
    live_us = await layer.new_channel()
    eu = Placement(1, 1, "eu-hive", dead_eu, "cpu", 0, region="eu")
    us = Placement(2, 2, "us-hive", live_us, "cpu", 0, region="us")

    async def refresh() -> list[Placement]:
        return [eu, us]

    job = Job(
        job_id="j-eu",
        model="m",
        task="chat",
        request={},
        placements=[eu],
        refresh=refresh,
        preferred=eu,
        regions=("eu",),
    )
    with pytest.raises(APIError) as err:
        [e async for e in job.events()]
    assert err.value.status == 503
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(layer.receive(live_us), timeout=0.2)
    # Placements that are all outside the region: refused before anything is sent.
    job2 = Job(
        job_id="j-eu2",
        model="m",
        task="chat",
        request={},
        placements=[us],
        preferred=us,
        regions=("eu",),
    )
    with pytest.raises(APIError) as err2:
        [e async for e in job2.events()]
    assert err2.value.status == 503 and err2.value.code == "region_unavailable"
    assert err2.value.headers["Retry-After"] == "5"
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(layer.receive(live_us), timeout=0.2)
