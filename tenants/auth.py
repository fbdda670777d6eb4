"""Signing in to the portal and management APIs (HTTP Basic and the admin's session
login): failed sign-ins are counted per username and per client address, and after
RBEE_LOGIN_MAX_FAILURES (5) within RBEE_LOGIN_LOCKOUT_SECONDS (900) that username, or that
address, is locked for RBEE_LOGIN_LOCKOUT_SECONDS. A locked sign-in is refused before the
password hasher runs: HTTP Basic answers 429 with Retry-After; the admin's login form
says the credentials are wrong. Counters live in Redis when RBEE_REDIS_URL is set (shared
by every queen replica), else in Django's cache.

HTTP Basic is for scripts and the CLI, not browsers: it is refused on requests a browser
sends for another site (Sec-Fetch-Site cross-site or same-site, or an Origin that is not
the queen's own), and no endpoint sends a `WWW-Authenticate: Basic` challenge, so a
browser never caches Basic credentials for the queen."""

from __future__ import annotations

import hashlib
import logging
import math
import time
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend
from django.core.cache import cache
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest
from rest_framework import exceptions
from rest_framework.authentication import (
    BaseAuthentication,
    BasicAuthentication,
    SessionAuthentication,
    get_authorization_header,
)
from rest_framework.request import Request

from gdpr import audit
from gdpr import subjects as data_subjects
from gdpr.actions import AuditAction
from tenants.actors import address_net, user_subject

logger = logging.getLogger("tenants.auth")


def max_failures() -> int:
    return int(getattr(settings, "RBEE_LOGIN_MAX_FAILURES", 5))


def lockout_seconds() -> int:
    return int(getattr(settings, "RBEE_LOGIN_LOCKOUT_SECONDS", 900))


def _prefix() -> str:
    # RBEE_LOGIN_PREFIX: tests give each test its own counters.
    explicit = getattr(settings, "RBEE_LOGIN_PREFIX", "")
    return explicit or f"{getattr(settings, 'RBEE_LIMITS_PREFIX', '') or 'rbee:lim'}:login"


def client_address(request: HttpRequest | Request | None) -> str:
    """The peer's address (no proxy header is trusted: a client could forge it)."""
    if request is None:
        return ""
    return str(request.META.get("REMOTE_ADDR") or "")


def subjects(username: str | None, address: str) -> list[str]:
    """The counters a sign-in attempt touches: its username (case-folded, hashed so no
    username is written to Redis) and its client address."""
    out = []
    if username:
        out.append("u:" + hashlib.sha256(username.strip().casefold().encode()).hexdigest()[:32])
    if address:
        out.append("a:" + address)
    return out


class _CacheCounts:
    """Counters in Django's cache (the embedded default: one queen process)."""

    def left(self, lock: str) -> float:
        until = cache.get(lock)
        return float(until) - time.time() if until else 0.0

    def fail(self, counter: str, lock: str, window: int, limit: int) -> bool:
        cache.add(counter, 0, window)
        try:
            n = cache.incr(counter)
        except ValueError:  # expired between add and incr
            cache.set(counter, 1, window)
            n = 1
        if n >= limit:
            cache.set(lock, time.time() + window, window)
            cache.delete(counter)
            return True
        return False

    def clear(self, counter: str) -> None:
        cache.delete(counter)


class _RedisCounts:
    """Counters in Redis, shared by every queen replica."""

    def __init__(self, client: Any) -> None:
        self.r = client

    def left(self, lock: str) -> float:
        ms = self.r.pttl(lock)
        return ms / 1000 if ms and ms > 0 else 0.0

    def fail(self, counter: str, lock: str, window: int, limit: int) -> bool:
        pipe = self.r.pipeline()
        pipe.set(counter, 0, ex=window, nx=True)
        pipe.incr(counter)
        if int(pipe.execute()[1]) >= limit:
            self.r.set(lock, 1, ex=window)
            self.r.delete(counter)
            return True
        return False

    def clear(self, counter: str) -> None:
        self.r.delete(counter)


_CACHE = _CacheCounts()
_clients: dict[str, Any] = {}


def _stores() -> list[Any]:
    """Where to count, in order: Redis when configured, then Django's cache (used when
    Redis does not answer: a sign-in is never a 500, and the lockout still holds)."""
    url = str(getattr(settings, "REDIS_URL", "") or "")
    if not url:
        return [_CACHE]
    if url not in _clients:
        import redis

        _clients[url] = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    return [_RedisCounts(_clients[url]), _CACHE]


def _each(op: Any) -> Any:
    """op(store) on the first store that answers."""
    import redis

    *first, last = _stores()
    for store in first:
        try:
            return op(store)
        except redis.RedisError as exc:
            logger.warning("sign-in counters: Redis did not answer (%s); using the cache", exc)
    return op(last)


def locked_for(keys: list[str]) -> int:
    """Seconds until every one of `keys` is unlocked (0: none is locked)."""
    wait = max(
        [_each(lambda store, k=k: store.left(f"{_prefix()}:lock:{k}")) for k in keys],
        default=0.0,
    )
    return math.ceil(wait) if wait > 0 else 0


def record_failure(keys: list[str]) -> list[str]:
    """Count one failed sign-in against each key; lock the ones that reach the limit.
    Returns the kinds locked by this failure ("username", "address")."""
    window, limit = lockout_seconds(), max_failures()
    locked = []
    for k in keys:
        counter, lock = f"{_prefix()}:fail:{k}", f"{_prefix()}:lock:{k}"
        if _each(lambda store, c=counter, lk=lock: store.fail(c, lk, window, limit)):
            locked.append("username" if k.startswith("u:") else "address")
    return locked


def audit_sign_in(
    request: Any,
    username: str | None,
    user: Any,
    *,
    reason: str = "",
    locked: list[str] | None = None,
) -> None:
    """The audit events of one sign-in attempt: login.success, or login.failure (with
    `reason`: "bad_credentials" or "locked"), plus login.lockout when this failure locked
    the username or the address. The address and the username typed are personal data
    (sealed); the username never goes in `data`, even when no account has it. The
    account's person is the event's subject, when the username is one of ours."""
    if user is None and username:
        user = get_user_model()._default_manager.filter(username=username).first()
    subject = user_subject(user) if user is not None else _typed_subject(username)
    address = client_address(request)
    method = "basic" if isinstance(request, Request) or _basic(request) else "form"
    data: dict[str, Any] = {"method": method, "known_user": user is not None}
    if user is not None:
        data["user_id"] = user.pk
    personal: dict[str, str] = {}
    if subject is not None:
        personal = {"address": address} if address else {}
        if username:
            personal["username"] = username[:150]
    elif address:
        # Nobody to seal it under (an unknown, non-e-mail username): the network only.
        data["address_net"] = address_net(address)
    actor: Any = subject or (f"user#{user.pk}" if user is not None else "anonymous")
    if not reason:
        if method == "basic":
            # HTTP Basic authenticates every API call: a call is not a sign-in, and an
            # event per call would fill an append-only log kept seven years with the
            # caller's address. Failures and lockouts are recorded for Basic too.
            return
        audit.record(
            AuditAction.LOGIN_SUCCESS, actor=actor, subject=subject, personal=personal, data=data
        )
        return
    if reason == "locked" and not cache.add(
        f"rbee-audit-locked:{hashlib.sha256(f'{username}|{address}'.encode()).hexdigest()}",
        1,
        timeout=60,
    ):
        # Attempts while locked out: one event a minute per username and address, so a
        # client hammering a locked account cannot grow the append-only log at will.
        return
    audit.record(
        AuditAction.LOGIN_FAILURE,
        actor=actor,
        subject=subject,
        personal=personal,
        data={**data, "reason": reason},
        outcome="denied",
    )
    if locked:
        audit.record(
            AuditAction.LOGIN_LOCKOUT,
            actor=actor,
            subject=subject,
            personal=personal,
            data={**data, "locked": locked, "seconds": lockout_seconds()},
            outcome="denied",
        )


def _typed_subject(username: str | None) -> Any:
    """An unknown username that is an e-mail address names the person it belongs to:
    the attempt is about them (and erasing them shreds it)."""
    if not username or "@" not in username:
        return None
    try:
        return data_subjects.user(username)
    except data_subjects.SubjectError:
        return None


def _basic(request: Any) -> bool:
    meta = getattr(request, "META", None) or {}
    return str(meta.get("HTTP_AUTHORIZATION", "")).lower().startswith("basic ")


def clear_failures(keys: list[str]) -> None:
    """A successful sign-in forgets the username's earlier failures (not the address's:
    one valid account must not reset the count of guesses at others)."""
    for k in keys:
        if k.startswith("u:"):
            counter = f"{_prefix()}:fail:{k}"
            _each(lambda store, c=counter: store.clear(c))


class LoginLocked(PermissionDenied):
    """Raised by the backend for a locked username or address: Django's authenticate()
    stops there, without trying the password."""

    def __init__(self, wait: int) -> None:
        super().__init__(f"too many failed sign-ins: try again in {wait} s")
        self.wait = wait


class LockoutModelBackend(ModelBackend):
    """Django's ModelBackend, refusing locked usernames and addresses before hashing and
    counting failures (settings.AUTHENTICATION_BACKENDS: the admin's login and HTTP Basic
    both come through here)."""

    def authenticate(
        self,
        request: Any,
        username: str | None = None,
        password: str | None = None,
        **kwargs: Any,
    ) -> Any:
        if username is None:
            username = kwargs.get(get_user_model().USERNAME_FIELD)
        keys = subjects(username, client_address(request))
        wait = locked_for(keys)
        if wait:
            audit_sign_in(request, username, None, reason="locked")
            raise LoginLocked(wait)
        user = super().authenticate(request, username=username, password=password, **kwargs)
        if user is None:
            locked = record_failure(keys)
            audit_sign_in(request, username, None, reason="bad_credentials", locked=locked)
        else:
            clear_failures(keys)
            audit_sign_in(request, username, user)
        return user


def _own_origin(request: Request) -> str:
    host = str(request.META.get("HTTP_HOST") or "")
    return f"{request.scheme}://{host}".lower()


def refuse_cross_site(request: Request) -> None:
    """A browser replays cached Basic credentials on requests other sites make: refuse
    those (Fetch Metadata where the browser sends it, else the Origin header)."""
    site = str(request.META.get("HTTP_SEC_FETCH_SITE") or "").lower()
    origin = str(request.META.get("HTTP_ORIGIN") or "").rstrip("/").lower()
    if site in ("cross-site", "same-site") or (origin and origin != _own_origin(request)):
        raise exceptions.AuthenticationFailed(
            "HTTP Basic credentials are not accepted on requests from another site; "
            "sign in on this site or call the API from a script"
        )


class GuardedBasicAuthentication(BasicAuthentication):
    """DRF's HTTP Basic with the lockout checked before the hasher runs, refused
    cross-site, and never a challenge (so browsers do not cache the credentials)."""

    def authenticate(self, request: Request) -> Any:
        auth = get_authorization_header(request).split()
        if not auth or auth[0].lower() != b"basic":
            return None
        refuse_cross_site(request)
        return super().authenticate(request)

    def authenticate_credentials(
        self, userid: str, password: str, request: Request | None = None
    ) -> Any:
        wait = locked_for(subjects(userid, client_address(request)))
        if wait:
            audit_sign_in(request, userid, None, reason="locked")
            raise exceptions.Throttled(
                wait=wait, detail=f"too many failed sign-ins: try again in {wait} s"
            )
        return super().authenticate_credentials(userid, password, request)

    def authenticate_header(self, request: Request) -> None:
        return None


# The authentication of every portal and management endpoint: a session (the admin's
# login, with CSRF on writes) or guarded HTTP Basic.
API_AUTHENTICATION: list[type[BaseAuthentication]] = [
    SessionAuthentication,
    GuardedBasicAuthentication,
]
