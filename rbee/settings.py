"""Django settings for the queen.

Two modes, chosen by the environment:

* embedded default (nothing set): SQLite under RBEE_HOME, the in-memory channel
  layer and background jobs run in-process. One process, one command, a laptop.
* production: ``RBEE_DATABASE_URL=postgres://...`` selects PostgreSQL (psycopg 3)
  and ``RBEE_REDIS_URL=redis://...`` selects channels_redis and Celery on Redis,
  so several queen replicas can share state.
"""

from __future__ import annotations

import environ

from billing.schedule import beat_schedule
from kernel.paths import load_or_create_secret_key, rbee_home

env = environ.Env()

RBEE_HOME = rbee_home()

SECRET_KEY = env.str("RBEE_SECRET_KEY", default="") or load_or_create_secret_key()
DEBUG = env.bool("RBEE_DEBUG", default=False)
ALLOWED_HOSTS = env.list("RBEE_ALLOWED_HOSTS", default=["*"])

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
    "rbee",
    "tenants",
    "billing",
    "gdpr",
    "hives",
    "inference",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
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
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- channel layer and background jobs -------------------------------------------
REDIS_URL = env.str("RBEE_REDIS_URL", default="")
CHANNEL_CAPACITY = env.int("RBEE_CHANNEL_CAPACITY", default=2000)
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            # The core layer, not the pub/sub one: the latter is beta and
            # loses messages across reconnects.
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                # redis-py 8 defaults socket_timeout to 5 s, the same as the
                # layer's blocking BZPOPMIN: reads then time out and tear down
                # every consumer. Give reads room beyond the 5 s block.
                "hosts": [
                    {"address": REDIS_URL, "socket_timeout": 30, "socket_connect_timeout": 5}
                ],
                "capacity": CHANNEL_CAPACITY,
                "expiry": 60,
                "prefix": env.str("RBEE_CHANNEL_PREFIX", default="rbee"),
            },
        }
    }
    CELERY_BROKER_URL = REDIS_URL
    CELERY_TASK_ALWAYS_EAGER = False
else:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels.layers.InMemoryChannelLayer",
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
CELERY_IMPORTS = ("billing.tasks", "billing.invoice_tasks")
# One schedule for beat and for the embedded default's thread (billing/schedule.py).
CELERY_BEAT_SCHEDULE = beat_schedule()

# --- request limits ----------------------------------------------------------------
# Largest body /v1/ accepts (the multipart uploads); larger bodies get 413 before they are
# parsed. 25 MiB audio uploads (OpenAI's limit) plus the form around them.
RBEE_MAX_BODY_BYTES = env.int("RBEE_MAX_BODY_BYTES", default=26 * 1024 * 1024)
# Largest JSON body /v1/ accepts (never more than RBEE_MAX_BODY_BYTES); 413 past it.
RBEE_MAX_JSON_BYTES = env.int("RBEE_MAX_JSON_BYTES", default=1024 * 1024)
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
# Days a tenant whose payment failed is still served before it is suspended.
RBEE_PAST_DUE_GRACE_DAYS = env.float("RBEE_PAST_DUE_GRACE_DAYS", default=7.0)

# How long an image answered as a URL stays downloadable from the queen.
RBEE_IMAGE_URL_TTL = env.int("RBEE_IMAGE_URL_TTL", default=3600)
DATA_UPLOAD_MAX_MEMORY_SIZE = max(RBEE_MAX_BODY_BYTES, 2_621_440)
# How long a dispatched job may wait for its hive to acknowledge it before it
# is sent again (to another hive when there is one), and how many tries.
RBEE_DISPATCH_ACK_TIMEOUT = env.float("RBEE_DISPATCH_ACK_TIMEOUT", default=5.0)
RBEE_DISPATCH_TRIES = env.int("RBEE_DISPATCH_TRIES", default=2)
# Longest silence between two events of a running job before it is failed.
RBEE_JOB_IDLE_TIMEOUT = env.float("RBEE_JOB_IDLE_TIMEOUT", default=120.0)
# A hive that has not been heard from in this long is not routed to.
RBEE_HIVE_STALE_AFTER = env.float("RBEE_HIVE_STALE_AFTER", default=15.0)  # 3 heartbeats

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

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAdminUser"],
    # One error handler and one table of domain codes for every DRF endpoint.
    "EXCEPTION_HANDLER": "rbee.api_errors.exception_handler",
}

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
        "django.request": {"level": "ERROR"},
    },
}
