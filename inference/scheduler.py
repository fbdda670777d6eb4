"""Admission and routing by the owner's Rhai script (the seeds' `scheduler.rhai`).

For each request the queen builds a *task* map and one *worker* map per eligible
worker (ready, on a live hive, serving the model, in an allowed region) and asks
the script:

* `should_admit(task, queue_depth)` or `should_admit(task, customer)` — the name
  of the second parameter picks what it gets — returning `admit()`,
  `reject(reason)` (429, with Retry-After) or `deny(reason)` (403);
* `route_task(task, workers)` returning one of the worker maps.

A script that returns unit, a worker outside the eligible set, or fails, falls
back to the default policy (least loaded) and the failure is logged and counted,
never turned into a 500. The queen calls the script off its event loop
(`admit_async`, `route_async`: a small thread pool) and waits at most
RBEE_SCHEDULER_TIMEOUT_MS; past that the default policy decides (logged and
counted as a timeout), and the engine's own wall-clock limit stops the script.
The script in force is the newest stored version; each process compiles it once
and re-checks the version at most every RBEE_SCHEDULER_CHECK_SECONDS.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import rhai
from hives.protocol import Capability
from hives.selectors import Placement
from kernel.errors import DomainError

logger = logging.getLogger("inference.scheduler")

# What happened, for /metrics and the dashboard (per process).
counters: Counter[str] = Counter()

OPS_LIMIT = 200_000  # per call: a routing decision over 1,000 workers needs ~10,000
DEFAULT_TIMEOUT_MS = 75.0  # RBEE_SCHEDULER_TIMEOUT_MS


def timeout_seconds() -> float:
    """How long a request waits for the script (RBEE_SCHEDULER_TIMEOUT_MS): also the
    engine's wall-clock limit per call, so an abandoned call stops by itself soon after."""
    from django.conf import settings

    try:
        ms = float(getattr(settings, "RBEE_SCHEDULER_TIMEOUT_MS", DEFAULT_TIMEOUT_MS))
    except Exception:  # settings not configured (a library use): the default
        ms = DEFAULT_TIMEOUT_MS
    return max(ms, 1.0) / 1000


@dataclass(frozen=True)
class Admission:
    admitted: bool
    reason: str = ""
    status: int = 429


@dataclass(frozen=True)
class Decision:
    placement: Placement
    source: str  # "script" or "default"
    reason: str = ""  # why, in words (the dashboard's recent decisions)


def _first(items: Any) -> Any:
    return items[0] if isinstance(items, list) and items else None


# --- the one "least loaded" rule ----------------------------------------------------------


def _rank(local: float, reported: float, vram_free_mb: float) -> tuple[float, float, float]:
    """Fewest jobs in all (this process's count plus the hive's last report: a script's
    `load`), then fewest of this process's own (always current), then the most free
    memory. Scripts written against `least_loaded()` keep the order they always had."""
    return (local + reported, local, -vram_free_mb)


def least_loaded(placements: Sequence[Placement], load: Mapping[int, int]) -> Placement:
    """The least loaded placement, the first of equals: the default policy, a retried
    dispatch and the scripts' `least_loaded()` all choose by this one rule. `load` is this
    process's count of jobs in flight per worker id (inference/dispatch.py)."""
    return min(
        placements, key=lambda p: _rank(load.get(p.worker_id, 0), p.inflight, p.vram_free_mb)
    )


def _num(v: Any) -> float:
    return v if isinstance(v, int | float) and not isinstance(v, bool) else 0


def _least_loaded_map(items: Any) -> Any:
    """`workers.least_loaded()` in a script, over the worker maps (see worker_map: `load`
    is this process's count plus the hive's report, `queue_depth` this process's count)."""
    if not isinstance(items, list) or not items:
        return None

    def key(w: Any) -> tuple[float, float, float]:
        if not isinstance(w, dict):
            return _rank(0, 0, 0)
        local = _num(w.get("queue_depth", 0))
        return _rank(local, _num(w.get("load", 0)) - local, _num(w.get("vram_free_mb", 0)))

    return min(items, key=key)


def _admit() -> dict[str, Any]:
    return {"admitted": True}


def _reject(reason: Any = "rejected by the scheduler") -> dict[str, Any]:
    return {"admitted": False, "reason": str(reason), "status": 429}


def _deny(reason: Any = "refused by the scheduler") -> dict[str, Any]:
    return {"admitted": False, "reason": str(reason), "status": 403}


def new_engine(max_time: float = 0.0) -> rhai.Engine:
    engine = rhai.Engine(max_operations=OPS_LIMIT, max_call_levels=32, max_time=max_time)
    engine.on_progress = _hand_over_gil
    engine.register_fn("first", _first)
    engine.register_fn("least_loaded", _least_loaded_map)
    engine.register_fn("admit", _admit)
    engine.register_fn("reject", _reject)
    engine.register_fn("deny", _deny)
    engine.on_print = lambda text: logger.info("scheduler: %s", text)
    engine.on_debug = lambda text: logger.debug("scheduler: %s", text)
    return engine


class SchedulerCode(enum.StrEnum):
    SCRIPT_INVALID = "script_invalid"  # does not compile, or defines neither function
    REJECTED = "scheduler_rejected"  # should_admit returned reject(reason)
    DENIED = "scheduler_denied"  # should_admit returned deny(reason)


class SchedulerError(DomainError):
    """What the scheduler refuses, by code (mapped to HTTP by inference/errors.py for /v1
    and rbee/api_errors.py for the API)."""


class ScriptError(SchedulerError):
    """The script does not compile or does not define what the scheduler needs. Its
    message reads "line:column: what" (as `rbee scheduler check` prints it); `data` holds
    `line`, `column` and `detail` (the message alone), taken from the Rhai error."""

    def __init__(self, detail: str, *, line: int, column: int) -> None:
        super().__init__(
            SchedulerCode.SCRIPT_INVALID,
            f"{line}:{column}: {detail}",
            data={"line": line, "column": column, "detail": detail},
        )

    @classmethod
    def from_rhai(cls, exc: rhai.RhaiError) -> ScriptError:
        return cls(exc.message, line=exc.line, column=exc.column)


class ScriptTimeout(Exception):
    """A call given its own time limit ran past it (see Policy._call)."""


class Policy:
    """One compiled script (or none: the default policy only)."""

    def __init__(
        self,
        source: str = "",
        version: int = 0,
        max_time: float | None = None,
        *,
        counted: bool = True,
    ) -> None:
        self.source = source
        self.version = version
        # What it decides counts in this process's /metrics; a dry run's (the dashboard's
        # Check) counts on its own.
        self.counters: Counter[str] = counters if counted else Counter()
        self.engine = new_engine(timeout_seconds() if max_time is None else max_time)
        self.ast: rhai.AST | None = None
        self.admit_arg = ""
        self.errors: list[str] = []  # the last few runtime errors, for `rbee scheduler check`
        if source.strip():
            try:
                self.ast = self.engine.compile(source)
            except rhai.RhaiError as exc:
                raise ScriptError.from_rhai(exc) from exc
            if self.ast.has_fn("should_admit", 2):
                self.admit_arg = self.ast.fn_params("should_admit", 2)[1]
            if not self.ast.has_fn("route_task", 2) and not self.admit_arg:
                raise ScriptError(
                    "the script defines neither fn route_task(task, workers) "
                    "nor fn should_admit(task, queue_depth | customer)",
                    line=1,
                    column=1,
                )

    def _failed(self, fn: str, exc: rhai.RhaiError) -> None:
        self.counters["script_errors"] += 1
        self.errors = [*self.errors[-9:], f"{exc} (in {fn})"]
        logger.warning("%s failed (scheduler v%s), default policy: %s", fn, self.version, exc)

    @property
    def routes(self) -> bool:
        return self.ast is not None and self.ast.has_fn("route_task", 2)

    def _call(self, fn: str, max_time: float | None, *args: Any) -> Any:
        """The script's ``fn``; with ``max_time``, a call past it raises ScriptTimeout for
        the caller to decide (rather than counting as the script's failure)."""
        assert self.ast is not None
        try:
            return self.engine.call_fn(self.ast, fn, *args, max_time=max_time)
        except rhai.LimitExceeded as exc:
            if max_time is not None and exc.message.startswith(rhai.TIMED_OUT):
                raise ScriptTimeout(fn) from exc
            raise

    def admit(
        self, task: dict[str, Any], customer: dict[str, Any], max_time: float | None = None
    ) -> Admission:
        if self.ast is None or not self.admit_arg:
            return Admission(True)
        arg: Any = customer.get("queue_depth", 0) if self.admit_arg == "queue_depth" else customer
        try:
            result = self._call("should_admit", max_time, task, arg)
        except rhai.RhaiError as exc:
            self._failed("should_admit", exc)
            return Admission(True)
        if isinstance(result, dict) and result.get("admitted") is False:
            self.counters["rejections"] += 1
            status = 403 if result.get("status") == 403 else 429
            return Admission(False, str(result.get("reason") or "rejected"), status)
        self.counters["admissions"] += 1
        return Admission(True)

    def route(
        self,
        task: dict[str, Any],
        placements: list[Placement],
        load: Mapping[int, int],
        max_time: float | None = None,
    ) -> Decision:
        reason = "no script in force" if self.ast is None else "the script has no route_task"
        if self.routes and self.ast is not None:
            maps = [worker_map(p, load.get(p.worker_id, 0)) for p in placements]
            try:
                chosen = self._call("route_task", max_time, task, maps)
            except rhai.RhaiError as exc:
                self._failed("route_task", exc)
                self.counters["fallbacks"] += 1
                reason = f"route_task failed: {exc}"
            else:
                wid = chosen.get("id") if isinstance(chosen, dict) else None
                for p in placements:
                    if p.worker_id == wid:
                        self.counters["script_decisions"] += 1
                        return Decision(p, "script", f"route_task chose worker {wid}")
                self.counters["fallbacks"] += 1
                if chosen is not None:
                    logger.info("route_task chose a worker outside the eligible set; default")
                    reason = "route_task chose a worker outside the eligible set"
                else:
                    reason = "route_task returned no worker"
        self.counters["default_decisions"] += 1
        return Decision(least_loaded(placements, load), "default", f"{reason}: least loaded")


# --- off the event loop ------------------------------------------------------------------

# Scripts are pure Python and hold the GIL while they run. A call first gets a short slice
# on the event loop (the engine's clock stops it there): nearly every script answers in well
# under a millisecond, with no thread hop. A call that needs longer starts again in the
# scheduler's one thread (scripts have no side effects, so running one again is safe) and is
# waited for until RBEE_SCHEDULER_TIMEOUT_MS. One thread, not several: each CPU-bound thread
# competes with the event loop for the GIL, and measured loop lag grows with their number
# (one spinning thread: ~20 ms at worst; four: ~300 ms). A call still queued for the thread
# when its caller gave up is skipped.
# In that thread a script hands the GIL over every 1,024 operations (engine.on_progress), so
# the loop's thread takes it within a fraction of a millisecond instead of the interpreter's
# 5 ms switch interval.
INLINE_SLICE = 0.002  # seconds
_in_pool = threading.local()


def _mark_pool_thread() -> None:
    _in_pool.yes = True


def _hand_over_gil(ops: int) -> None:
    if getattr(_in_pool, "yes", False):
        time.sleep(0)  # releases the GIL: a waiting thread (the event loop's) takes it


_pool = ThreadPoolExecutor(
    max_workers=1, thread_name_prefix="rbee-scheduler", initializer=_mark_pool_thread
)

T = TypeVar("T")


async def _bounded(run: Callable[[float | None], T], timeout: float) -> T | None:
    """``run(max_time)`` within ``timeout``: a slice on the loop, then the scheduler's
    thread; None when no answer came in time."""
    give_up = time.monotonic() + timeout
    try:
        return run(min(INLINE_SLICE, timeout))
    except ScriptTimeout:
        pass
    left = give_up - time.monotonic()

    def in_thread() -> T | None:
        remaining = give_up - time.monotonic()
        if remaining <= 0:
            return None  # waited in the queue past its time: nobody wants the answer
        try:
            return run(remaining)
        except ScriptTimeout:
            return None

    if left <= 0:
        return None
    try:
        return await asyncio.wait_for(asyncio.wrap_future(_pool.submit(in_thread)), left)
    except TimeoutError:
        return None


def _timed_out(policy: Policy, fn: str, timeout: float) -> None:
    counters["timeouts"] += 1
    counters["fallbacks"] += 1
    logger.warning(
        "%s took longer than %.0f ms (scheduler v%s): default policy",
        fn,
        timeout * 1000,
        policy.version,
    )


async def admit_async(
    policy: Policy, task: dict[str, Any], customer: dict[str, Any], timeout: float | None = None
) -> Admission:
    """`policy.admit` without stalling the event loop; past ``timeout``
    (RBEE_SCHEDULER_TIMEOUT_MS) the request is admitted, as by the default policy."""
    if policy.ast is None or not policy.admit_arg:
        return Admission(True)
    wait = timeout_seconds() if timeout is None else timeout
    result = await _bounded(lambda max_time: policy.admit(task, customer, max_time), wait)
    if result is None:
        _timed_out(policy, "should_admit", wait)
        return Admission(True)
    return result


async def route_async(
    policy: Policy,
    task: dict[str, Any],
    placements: list[Placement],
    load: Mapping[int, int],
    timeout: float | None = None,
) -> Decision:
    """`policy.route` without stalling the event loop; past ``timeout`` the least loaded
    worker."""
    snapshot = dict(load)  # the live count changes on the loop meanwhile
    if not policy.routes:
        return policy.route(task, placements, snapshot)  # the default: no script to wait for
    wait = timeout_seconds() if timeout is None else timeout
    result = await _bounded(
        lambda max_time: policy.route(task, placements, snapshot, max_time), wait
    )
    if result is None:
        _timed_out(policy, "route_task", wait)
        counters["default_decisions"] += 1
        return Decision(
            least_loaded(placements, snapshot),
            "default",
            f"route_task took longer than {wait * 1000:.0f} ms: least loaded",
        )
    return result


def worker_map(p: Placement, load: int) -> dict[str, Any]:
    # Strings go in as exact `str`: Rhai compares values of different types as unequal, and
    # the host's enums and Device are str subclasses (`w.device == "cuda:0"` must hold).
    return {
        "id": p.worker_id,
        "hive": str(p.hive_name),
        "gpu_type": str(p.gpu_type),
        "capability": str(p.capability),
        "region": str(p.region),
        "load": load + p.inflight,
        "queue_depth": load,
        "vram_free_mb": p.vram_free_mb,
        "vram_total_mb": p.vram_total_mb,
        "models": [str(p.model)],
        "pinned": p.pinned,
        "device": str(p.device),
    }


def task_map(
    *, type: str, model: str, priority: str, tier: str, tenant: str, region: str, size: int
) -> dict[str, Any]:
    return {  # exact str values, as in worker_map
        "type": str(type),
        "model": str(model),
        "priority": str(priority),
        "customer_tier": str(tier),
        "tenant": str(tenant),
        "region": str(region),
        "size": size,
    }


# --- the script in force, per process -------------------------------------------------

_lock = threading.Lock()
_current = Policy()
_checked_at = 0.0


def digest(source: str) -> str:
    return hashlib.sha256(source.encode()).hexdigest()


def current_policy(check_every: float) -> Policy:
    """The compiled script in force. Sync (database): call through kernel.aio.db."""
    global _current, _checked_at
    now = time.monotonic()
    if now - _checked_at < check_every:
        return _current
    from inference.models import SchedulerScript

    latest = SchedulerScript.objects.only("id").first()
    version = latest.pk if latest else 0
    with _lock:
        _checked_at = now
        if version != _current.version:
            if latest is None:
                _current = Policy()
            else:
                row = SchedulerScript.objects.get(pk=version)
                try:
                    _current = Policy(row.source, row.pk)
                    logger.info("scheduler script v%s in force", row.pk)
                except ScriptError as exc:  # stored scripts were checked; keep the old one
                    logger.error("scheduler script v%s does not compile: %s", row.pk, exc)
                    _current = Policy(_current.source, version) if _current.source else Policy()
        return _current


def policy_if_fresh(check_every: float) -> Policy | None:
    """The script in force, if it was checked within `check_every` seconds (no database:
    safe on the event loop); None when it is due to be checked (current_policy)."""
    if time.monotonic() - _checked_at < check_every:
        return _current
    return None


def version_in_force() -> int:
    """The version of the script this process runs (0: none), as last checked."""
    return _current.version


def sample_request(*, kind: str, model: str, tier: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A sample interactive task of `kind` for `model` and a customer of `tier` with nothing
    used yet: what the script's dry runs (`rbee scheduler check`, the dashboard's Check)
    are given, in the shape real requests give it."""
    task = task_map(
        type=kind,
        model=model,
        priority="interactive",
        tier=tier,
        tenant="sample",
        region="",
        size=100,
    )
    customer = {
        "tenant": "sample",
        "tier": tier,
        "queue_depth": 0,
        "tenant_queue_depth": 0,
        "tokens_used_today": 0,
        "daily_limit": 100_000,
        "requests_today": 0,
        "images_today": 0,
        "audio_seconds_today": 0.0,
        "characters_today": 0,
        "limits": {},
    }
    return task, customer


def dry_run(policy: Policy, workers: list[Placement]) -> list[str]:
    """Run the script against sample tasks of every capability and tier over `workers` (a
    fleet: `rbee scheduler check` passes hives on recorded machines); returns what it
    decided, one line per task."""
    out = []
    for kind, model in (
        (Capability.TEXT_GEN, "llama-3-70b"),
        (Capability.TEXT_GEN, "llama-3-8b"),
        (Capability.IMAGE_GEN, "sdxl"),
        (Capability.AUDIO_TRANSCRIPTION, "whisper-large"),
        (Capability.EMBEDDING, "minilm"),
    ):
        for tier in ("free", "pro", "enterprise"):
            task, customer = sample_request(kind=kind, model=model, tier=tier)
            adm = policy.admit(task, customer)
            if not adm.admitted:
                out.append(f"{kind} {model} ({tier}): rejected {adm.status}: {adm.reason}")
                continue
            d = policy.route(task, workers, {})
            out.append(f"{kind} {model} ({tier}): -> {d.placement.hive_name} ({d.source})")
    return out
