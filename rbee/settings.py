"""Django settings for the queen.

Two modes, chosen by the environment:

* embedded default (nothing set): SQLite under RBEE_HOME, the in-memory channel
  layer and background jobs run in-process. One process, one command, a laptop.
* production: ``RBEE_DATABASE_URL=postgres://...`` selects PostgreSQL (psycopg 3)
  and ``RBEE_REDIS_URL=redis://...`` selects channels_redis and Celery on Redis,
  so several queen replicas can share state.
"""

from __future__ import annotations

import os

import environ

from billing.schedule import beat_schedule
from gdpr.schedule import beat_schedule as gdpr_beat_schedule
from kernel.paths import load_or_create_secret_key, rbee_home
from rbee.profile import security

env = environ.Env()

RBEE_HOME = rbee_home()

SECRET_KEY = env.str("RBEE_SECRET_KEY", default="") or load_or_create_secret_key()
DEBUG = env.bool("RBEE_DEBUG", default=False)

# --- security: the production profile (RBEE_PRODUCTION=1; rbee/profile.py) -------------
_security = security(os.environ)
RBEE_PRODUCTION = bool(_security["RBEE_PRODUCTION"])
ALLOWED_HOSTS = list(_security["ALLOWED_HOSTS"])
CSRF_TRUSTED_ORIGINS = list(_security["CSRF_TRUSTED_ORIGINS"])
# The origin people reach the queen at (https://rbee.example): e-mailed links use it.
RBEE_PUBLIC_URL = str(_security["RBEE_PUBLIC_URL"])
# Addresses (or CIDR blocks) of the reverse proxies whose X-Forwarded-* headers count.
RBEE_TRUSTED_PROXIES = list(_security["RBEE_TRUSTED_PROXIES"])
SECURE_PROXY_SSL_HEADER = _security["SECURE_PROXY_SSL_HEADER"]
USE_X_FORWARDED_HOST = False
# Bearer token for /metrics and the /healthz inventory in production (else staff only).
RBEE_METRICS_TOKEN = str(_security["RBEE_METRICS_TOKEN"])
# Origins whose web pages may call /v1 from a browser (inference/cors.py); none by default.
RBEE_CORS_ORIGINS = list(_security["RBEE_CORS_ORIGINS"])
SESSION_COOKIE_SECURE = bool(_security.get("SESSION_COOKIE_SECURE", False))
SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_SECURE = bool(_security.get("CSRF_COOKIE_SECURE", False))
CSRF_COOKIE_HTTPONLY = bool(_security.get("CSRF_COOKIE_HTTPONLY", False))
SECURE_HSTS_SECONDS = int(_security.get("SECURE_HSTS_SECONDS", 0))
SECURE_HSTS_INCLUDE_SUBDOMAINS = bool(_security.get("SECURE_HSTS_INCLUDE_SUBDOMAINS", False))
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = str(_security.get("SECURE_REFERRER_POLICY", "same-origin"))
X_FRAME_OPTIONS = str(_security.get("X_FRAME_OPTIONS", "DENY"))

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "rest_framework",
    "drf_spectacular",
    "django_prometheus",
    "rbee",
    "tenants",
    "billing",
    "gdpr",
    "hives",
    "inference",
    "web",
]

# django-prometheus' pair around the site (the admin, the faces, the management API):
# requests, latency and responses by view. Both are async-capable (Django's
# MiddlewareMixin), so async views stay async; the /v1 API runs no middleware and is
# counted into the same series by rbee/api_asgi.py.
MIDDLEWARE = [
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "web.csp.ContentSecurityPolicyMiddleware",
    "web.nul.RejectNulMiddleware",  # a 400, not a database error, under the faces
    "rbee.prometheus.PrometheusAfterMiddleware",  # its method label bounded
]

ROOT_URLCONF = "rbee.urls"
ASGI_APPLICATION = "rbee.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- database -----------------------------------------------------------------
DATABASE_URL = env.str("RBEE_DATABASE_URL", default="")
if DATABASE_URL:
    DATABASES = {"default": env.db_url_config(DATABASE_URL)}
    if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
        # The request path's executor threads keep their connections (kernel/aio.py).
        DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("RBEE_DB_CONN_MAX_AGE", default=60))
        DATABASES["default"].setdefault("CONN_HEALTH_CHECKS", True)
        # A database that is down or unreachable fails a call within seconds instead of
        # hanging it (kernel/aio.py adds RBEE_DB_TIMEOUT around each call of the request
        # path): a connect timeout, TCP keepalives and a user timeout on unacked data.
        _pg = DATABASES["default"].setdefault("OPTIONS", {})
        _pg.setdefault("connect_timeout", env.int("RBEE_DB_CONNECT_TIMEOUT", default=3))
        _pg.setdefault("keepalives", 1)
        _pg.setdefault("keepalives_idle", 10)
        _pg.setdefault("keepalives_interval", 3)
        _pg.setdefault("keepalives_count", 3)
        _pg.setdefault("tcp_user_timeout", 10_000)  # ms
        if _statement_ms := env.int("RBEE_DB_STATEMENT_TIMEOUT_MS", default=0):
            _pg.setdefault("options", f"-c statement_timeout={_statement_ms}")
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(RBEE_HOME / "rbee.sqlite3"),
            "OPTIONS": {
                # WAL lets the CLI write while the queen reads; the timeout
                # rides out short write locks instead of failing.
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
                "timeout": 20,
                "transaction_mode": "IMMEDIATE",
            },
            "CONN_MAX_AGE": 60,
            # Tests get Django's shared in-memory database, named outright: under the
            # django-prometheus engine below pytest-django no longer recognises SQLite and
            # would derive "test_<this path>_gw0", a file that cannot be opened.
            "TEST": {"NAME": ":memory:"},
        }
    }
# django-prometheus' database backends: the same engines, counting connections, queries,
# their duration and errors (django_db_*).
_PROMETHEUS_ENGINES = {
    "django.db.backends.postgresql": "django_prometheus.db.backends.postgresql",
    "django.db.backends.sqlite3": "django_prometheus.db.backends.sqlite3",
}
DATABASES["default"]["ENGINE"] = _PROMETHEUS_ENGINES.get(
    DATABASES["default"]["ENGINE"], DATABASES["default"]["ENGINE"]
)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
# Longest a request-path database call may take before the request is answered 503 +
# Retry-After (the database is down or not answering); 0: no limit. SQLite cannot be down,
# but waits up to 20 s for a write lock: its default leaves room for that.
RBEE_DB_TIMEOUT = env.float("RBEE_DB_TIMEOUT", default=5.0 if DATABASE_URL else 25.0)

# --- channel layer and background jobs -------------------------------------------
REDIS_URL = env.str("RBEE_REDIS_URL", default="")
# Connect and read timeout of Redis calls on the request path (limits, the channel
# layer's sends): a Redis that is down or stops answering is a 503 within it, not a hang.
RBEE_REDIS_TIMEOUT = env.float("RBEE_REDIS_TIMEOUT", default=3.0)
CHANNEL_CAPACITY = env.int("RBEE_CHANNEL_CAPACITY", default=2000)
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            # The core layer, not the pub/sub one: the latter is beta and
            # loses messages across reconnects.
            # (channels_redis' core layer, blocking 1 s per pop: kernel/channel_layer.py)
            "BACKEND": "kernel.channel_layer.RedisChannelLayer",
            "CONFIG": {
                # Reads need room beyond the layer's 1 s blocking BZPOPMIN, or they time
                # out and tear down every consumer; past that, a Redis that does not
                # answer fails a send (a 503) instead of holding it.
                "hosts": [
                    {
                        "address": REDIS_URL,
                        "socket_timeout": max(RBEE_REDIS_TIMEOUT, 2.0),
                        "socket_connect_timeout": RBEE_REDIS_TIMEOUT,
                    }
                ],
                "capacity": CHANNEL_CAPACITY,
                "expiry": 60,
                "prefix": env.str("RBEE_CHANNEL_PREFIX", default="rbee"),
            },
        }
    }
    CELERY_BROKER_URL = REDIS_URL
    # A broker that is down fails a send within seconds (nothing on /v1 sends tasks).
    CELERY_BROKER_CONNECTION_TIMEOUT = RBEE_REDIS_TIMEOUT
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "socket_connect_timeout": RBEE_REDIS_TIMEOUT,
        "socket_timeout": max(10.0, RBEE_REDIS_TIMEOUT),  # beyond the worker's BRPOP wait
    }
    # Deployments sharing one Redis keep their queues apart (as RBEE_CHANNEL_PREFIX does
    # for the channel layer): a worker takes only the tasks of its own deployment.
    if celery_prefix := env.str("RBEE_CELERY_PREFIX", default=""):
        CELERY_BROKER_TRANSPORT_OPTIONS["global_keyprefix"] = celery_prefix
    CELERY_TASK_ALWAYS_EAGER = False
else:
    CHANNEL_LAYERS = {
        "default": {
            # channels' layer without its deep copy of each message (kernel/channel_layer.py)
            "BACKEND": "kernel.channel_layer.InMemoryChannelLayer",
            "CONFIG": {"capacity": CHANNEL_CAPACITY, "expiry": 60},
        }
    }
    CELERY_BROKER_URL = "memory://"
    CELERY_TASK_ALWAYS_EAGER = True  # background jobs in-process
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = "UTC"
# billing/invoice_tasks.py is not named tasks.py, so autodiscovery would miss it.
CELERY_IMPORTS = ("billing.tasks", "billing.invoice_tasks", "gdpr.tasks")
# One schedule for beat and for the embedded default's thread (billing/schedule.py).
CELERY_BEAT_SCHEDULE = {**beat_schedule(), **gdpr_beat_schedule()}
# Beat's own state belongs in the data directory, not wherever `rbee billing worker` ran.
CELERY_BEAT_SCHEDULE_FILENAME = str(RBEE_HOME / "celerybeat-schedule")

# Django's cache (sign-in lockouts on the embedded default, the console's last audit
# verification): this process's memory, through django-prometheus' backend (django_cache_*).
CACHES = {"default": {"BACKEND": "django_prometheus.cache.backends.locmem.LocMemCache"}}
PROMETHEUS_EXPORT_MIGRATIONS = False  # no database work when the app starts

# --- request limits ----------------------------------------------------------------
# Largest body /v1/ accepts (the multipart uploads); larger bodies get 413 before they are
# parsed. 25 MiB audio uploads (OpenAI's limit) plus the form around them.
RBEE_MAX_BODY_BYTES = env.int("RBEE_MAX_BODY_BYTES", default=26 * 1024 * 1024)
# Largest JSON body /v1/ accepts (never more than RBEE_MAX_BODY_BYTES); 413 past it.
RBEE_MAX_JSON_BYTES = env.int("RBEE_MAX_JSON_BYTES", default=1024 * 1024)
# Request bytes one client address may have in flight at once (declared bodies of the
# requests being received or served); past it a request is a 429 before it is read.
RBEE_MAX_INFLIGHT_BYTES_PER_CLIENT = env.int(
    "RBEE_MAX_INFLIGHT_BYTES_PER_CLIENT", default=64 * 1024 * 1024
)
# Longest audio one transcription may be (seconds): the queen refuses a longer one from
# its header, the hive stops decoding past it (hives/agent/engines/whisper.py).
RBEE_MAX_AUDIO_SECONDS = env.int("RBEE_MAX_AUDIO_SECONDS", default=3600)
# --- gdpr: retention (gdpr/retention.py) --------------------------------------------------
# Books and invoices of tenants whose jurisdiction has no statutory period in the table:
# 10 years unless set (an operator's `rbee gdpr retention set` replaces it per class).
RBEE_RETENTION_DEFAULT_DAYS = env.int("RBEE_RETENTION_DEFAULT_DAYS", default=3653)
# Handled Stripe webhook ids (no personal data), bounded.
RBEE_RETENTION_STRIPE_EVENTS_DAYS = env.int("RBEE_RETENTION_STRIPE_EVENTS_DAYS", default=90)

# --- billing: Stripe -----------------------------------------------------------------
# Stripe is optional: without a secret key nothing is sent. RBEE_STRIPE_API_BASE points the
# stripe library elsewhere (the tests' Stripe-compatible server on loopback).
RBEE_STRIPE_SECRET_KEY = env.str("RBEE_STRIPE_SECRET_KEY", default="")
RBEE_STRIPE_WEBHOOK_SECRET = env.str("RBEE_STRIPE_WEBHOOK_SECRET", default="")
RBEE_STRIPE_API_BASE = env.str("RBEE_STRIPE_API_BASE", default="")
# Our metered unit -> the event name of the Stripe Billing Meter that counts it.
RBEE_STRIPE_METERS = {
    "prompt_tokens": env.str("RBEE_STRIPE_METER_PROMPT_TOKENS", default="rbee_prompt_tokens"),
    "completion_tokens": env.str(
        "RBEE_STRIPE_METER_COMPLETION_TOKENS", default="rbee_completion_tokens"
    ),
    "images": env.str("RBEE_STRIPE_METER_IMAGES", default="rbee_images"),
    "audio_seconds": env.str("RBEE_STRIPE_METER_AUDIO_SECONDS", default="rbee_audio_seconds"),
    "characters": env.str("RBEE_STRIPE_METER_CHARACTERS", default="rbee_characters"),
}
# The Redis key prefix of rate-limit and quota counters (one per deployment).
RBEE_LIMITS_PREFIX = env.str("RBEE_LIMITS_PREFIX", default="rbee:lim")
# The Redis keys of the generation counters that tell every queen process when keys,
# tenants, plans or the fleet changed (kernel/generations.py); deployments sharing one
# Redis keep theirs apart by default (the channel prefix).
RBEE_GENERATIONS_PREFIX = env.str(
    "RBEE_GENERATIONS_PREFIX", default=env.str("RBEE_CHANNEL_PREFIX", default="rbee") + ":gen:"
)
# How long a request holds a concurrency slot without renewing it (running requests
# renew it every RBEE_USAGE_HEARTBEAT_SECONDS; a dead queen's requests lose it).
RBEE_CONCURRENCY_LEASE_SECONDS = env.float("RBEE_CONCURRENCY_LEASE_SECONDS", default=600.0)
# A running request refreshes its provisional usage row (its counts so far) this often;
# a provisional row not refreshed for RBEE_USAGE_LEASE_SECONDS, or whose queen process is
# gone, is settled as `interrupted` by the queens' settler, run every
# RBEE_USAGE_SETTLE_SECONDS (billing/periodic.py).
RBEE_USAGE_HEARTBEAT_SECONDS = env.float("RBEE_USAGE_HEARTBEAT_SECONDS", default=15.0)
RBEE_USAGE_LEASE_SECONDS = env.float("RBEE_USAGE_LEASE_SECONDS", default=120.0)
RBEE_USAGE_SETTLE_SECONDS = env.float("RBEE_USAGE_SETTLE_SECONDS", default=30.0)
# Days a tenant whose payment failed is still served before it is suspended.
RBEE_PAST_DUE_GRACE_DAYS = env.float("RBEE_PAST_DUE_GRACE_DAYS", default=7.0)

# How long an image answered as a URL stays downloadable from the queen.
RBEE_IMAGE_URL_TTL = env.int("RBEE_IMAGE_URL_TTL", default=3600)
# How long a video's files (and its job) stay after the job ended: then they are deleted.
RBEE_VIDEO_TTL = env.int("RBEE_VIDEO_TTL", default=86400)
# A queued or running video whose queen has not touched it for this long is failed
# (its queen died: the job cannot go on elsewhere).
RBEE_VIDEO_STALE_SECONDS = env.int("RBEE_VIDEO_STALE_SECONDS", default=600)
DATA_UPLOAD_MAX_MEMORY_SIZE = max(RBEE_MAX_BODY_BYTES, 2_621_440)
# How long a dispatched job may wait for its hive to acknowledge it before it
# is sent again (to another hive when there is one), and how many tries.
RBEE_DISPATCH_ACK_TIMEOUT = env.float("RBEE_DISPATCH_ACK_TIMEOUT", default=5.0)
RBEE_DISPATCH_TRIES = env.int("RBEE_DISPATCH_TRIES", default=2)
# Longest silence between two events of a running job before it is failed.
RBEE_JOB_IDLE_TIMEOUT = env.float("RBEE_JOB_IDLE_TIMEOUT", default=120.0)
# A hive that has not been heard from in this long is not routed to.
RBEE_HIVE_STALE_AFTER = env.float("RBEE_HIVE_STALE_AFTER", default=15.0)  # 3 heartbeats
# Seconds between a hive's heartbeats (told to hives in the welcome); a revoked or
# disabled hive's socket is closed within one.
RBEE_HIVE_HEARTBEAT = env.float("RBEE_HIVE_HEARTBEAT", default=5.0)

# Waiting for a free worker (inference/queueing.py): jobs per worker at once, the
# longest queue per model and process, and the longest wait.
RBEE_WORKER_SLOTS = env.int("RBEE_WORKER_SLOTS", default=1)
RBEE_QUEUE_MAX = env.int("RBEE_QUEUE_MAX", default=64)
# One tenant's waiting requests per model (times its plan's queue_weight; 0: no cap of its own).
RBEE_QUEUE_MAX_PER_TENANT = env.int("RBEE_QUEUE_MAX_PER_TENANT", default=16)
RBEE_QUEUE_TIMEOUT = env.float("RBEE_QUEUE_TIMEOUT", default=60.0)

# How often each queen process looks for a new scheduler script version.
RBEE_SCHEDULER_CHECK_SECONDS = env.float("RBEE_SCHEDULER_CHECK_SECONDS", default=1.0)
# How long a request waits for should_admit / route_task (run off the event loop) before
# the default policy decides; also the script's wall-clock limit per call.
RBEE_SCHEDULER_TIMEOUT_MS = env.float("RBEE_SCHEDULER_TIMEOUT_MS", default=75.0)
# How many recent scheduling decisions each queen process keeps for /ui/scheduler.
RBEE_SCHEDULER_DECISIONS_KEPT = env.int("RBEE_SCHEDULER_DECISIONS_KEPT", default=200)
# The charts' metrics (inference/stats.py): each queen sums its requests per minute and
# model in memory and adds them to the database this often; per-minute request sums and
# device samples older than RBEE_METRICS_RETENTION_DAYS are deleted.
RBEE_METRICS_FLUSH_SECONDS = env.float("RBEE_METRICS_FLUSH_SECONDS", default=10.0)
RBEE_METRICS_RETENTION_DAYS = env.float("RBEE_METRICS_RETENTION_DAYS", default=14.0)

# Requests without an Authorization header act as this tenant (empty: refused).
# For a queen on a personal machine, bound to loopback: `rbee up --open`.
RBEE_ANONYMOUS_TENANT = env.str("RBEE_ANONYMOUS_TENANT", default="")

# --- the rest ------------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = env.str("RBEE_STATIC_ROOT", default=str(RBEE_HOME / "static"))

# The web faces (web/): sessions of signed-in operators and members last
# RBEE_SESSION_SECONDS (8 h) from sign-in; signing out ends them at once.
SESSION_COOKIE_AGE = env.int("RBEE_SESSION_SECONDS", default=8 * 3600)
SESSION_COOKIE_SAMESITE = "Lax"
LOGIN_URL = "/ui/login"

# E-mail (the portal's invitations and password resets): SMTP when RBEE_EMAIL_HOST is set,
# else the console (the embedded default prints the message, links included, to the log);
# tests get Django's locmem outbox. RBEE_EMAIL_BACKEND names another backend outright.
EMAIL_HOST = env.str("RBEE_EMAIL_HOST", default="")
EMAIL_PORT = env.int("RBEE_EMAIL_PORT", default=587)
EMAIL_HOST_USER = env.str("RBEE_EMAIL_USER", default="")
EMAIL_HOST_PASSWORD = env.str("RBEE_EMAIL_PASSWORD", default="")
EMAIL_USE_TLS = env.bool("RBEE_EMAIL_TLS", default=True)
EMAIL_TIMEOUT = env.int("RBEE_EMAIL_TIMEOUT", default=10)
EMAIL_BACKEND = env.str(
    "RBEE_EMAIL_BACKEND",
    default=(
        "django.core.mail.backends.smtp.EmailBackend"
        if EMAIL_HOST
        else "django.core.mail.backends.console.EmailBackend"
    ),
)
DEFAULT_FROM_EMAIL = env.str("RBEE_EMAIL_FROM", default="rbee <rbee@localhost>")
# A password-reset link works once (the password it sets changes its hash) and for an hour.
PASSWORD_RESET_TIMEOUT = env.int("RBEE_PASSWORD_RESET_SECONDS", default=3600)

# Failed sign-ins (HTTP Basic, the admin's login) lock the username and the client
# address for a while, checked before the password hasher runs (tenants/auth.py).
AUTHENTICATION_BACKENDS = ["tenants.auth.LockoutModelBackend"]
RBEE_LOGIN_MAX_FAILURES = env.int("RBEE_LOGIN_MAX_FAILURES", default=5)
RBEE_LOGIN_LOCKOUT_SECONDS = env.int("RBEE_LOGIN_LOCKOUT_SECONDS", default=900)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
    ],
    # Every management view names its operators' permission (tenants/permissions.py);
    # one that forgets is for superusers only.
    "DEFAULT_PERMISSION_CLASSES": ["tenants.permissions.SuperuserOnly"],
    # Bodies are JSON objects (rbee/parsers.py), or forms where a view takes files.
    "DEFAULT_PARSER_CLASSES": [
        "rbee.parsers.ObjectJSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    # One error handler and one table of domain codes for every DRF endpoint.
    "EXCEPTION_HANDLER": "rbee.api_errors.exception_handler",
    # GET /api/schema: the management and portal API in OpenAPI 3 (rbee/openapi.py).
    "DEFAULT_SCHEMA_CLASS": "rbee.openapi.RbeeSchema",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "rbee management and portal API",
    "DESCRIPTION": "Operators' fleet, scheduler, tenant and billing endpoints, and the "
    "tenants' self-service portal. The /v1 API is OpenAI's and follows OpenAI's spec.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    # What the management surface looks like is for operators only.
    "SERVE_PERMISSIONS": ["tenants.permissions.AnyOperator"],
    "PREPROCESSING_HOOKS": ["rbee.openapi.only_management_api"],
}

# GDPR (gdpr/): who the controller is (Art. 13-15, 30), where log files are (erasure
# masks the subject in them, as in every file under RBEE_HOME), how long an export's
# download link works, and whose bookkeeping law sets how long invoices are kept.
RBEE_CONTROLLER_NAME = env.str("RBEE_CONTROLLER_NAME", default="")
RBEE_CONTROLLER_CONTACT = env.str("RBEE_CONTROLLER_CONTACT", default="")
RBEE_DPO_CONTACT = env.str("RBEE_DPO_CONTACT", default="")
RBEE_LOG_DIRS = env.list("RBEE_LOG_DIRS", default=[])
RBEE_GDPR_LINK_SECONDS = env.int("RBEE_GDPR_LINK_SECONDS", default=3600)
# Export archives are deleted this many days after they were built (gdpr.exports).
RBEE_GDPR_EXPORT_DAYS = env.int("RBEE_GDPR_EXPORT_DAYS", default=30)
# Requests one signed-in person may make in 24 hours (Art. 12(5): manifestly excessive
# requests may be refused; each export or erasure scans every store). The CLI is not capped.
RBEE_GDPR_REQUESTS_PER_DAY = env.int("RBEE_GDPR_REQUESTS_PER_DAY", default=20)
RBEE_BOOKS_JURISDICTION = env.str("RBEE_BOOKS_JURISDICTION", default="").upper()

LOG_LEVEL = env.str("RBEE_LOG_LEVEL", default="INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
    },
    "filters": {"secrets": {"()": "kernel.logs.RedactSecrets"}},
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "plain",
            "filters": ["secrets"],
        }
    },
    "root": {"handlers": ["console"], "level": "WARNING"},
    "loggers": {
        "rbee": {"level": LOG_LEVEL},
        "hives": {"level": LOG_LEVEL},
        "inference": {"level": LOG_LEVEL},
        "tenants": {"level": LOG_LEVEL},
        "billing": {"level": LOG_LEVEL},
        "gdpr": {"level": LOG_LEVEL},
        "django.request": {"level": "ERROR"},
    },
}
