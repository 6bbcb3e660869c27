"""PromptLooper settings: every value comes from an environment variable with a
safe default, so `make run` works with nothing set (see .env.example)."""

import os
import warnings
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def envbool(name: str, default: str) -> bool:
    return os.environ.get(name, default).strip().lower() in ("1", "true", "yes", "on")


def envint(name: str, default: str) -> int:
    value = os.environ.get(name, default)
    try:
        return int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, got {value!r}") from None


def envfloat(name: str, default: str) -> float:
    value = os.environ.get(name, default)
    try:
        return float(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number, got {value!r}") from None


def envlist(name: str, default: str) -> list[str]:
    return [part.strip() for part in os.environ.get(name, default).split(",") if part.strip()]


DEV_SECRET_KEY = "dev-only-insecure-secret-key-change-me"

# Off unless asked for (`make run` turns it on): a server started with nothing set
# must not show debug pages or run on a public key.
DEBUG = envbool("DEBUG", "false")
SECRET_KEY = os.environ.get("SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is off (see .env.example)")
    SECRET_KEY = DEV_SECRET_KEY
    warnings.warn(
        "SECRET_KEY is not set: using the development key. API keys stored now are "
        "encrypted with it; set SECRET_KEY before real use.",
        stacklevel=1,
    )
ALLOWED_HOSTS = envlist("ALLOWED_HOSTS", "127.0.0.1,localhost,testserver")
CSRF_TRUSTED_ORIGINS = envlist("CSRF_TRUSTED_ORIGINS", "")

# Behind a reverse proxy that terminates TLS (see the README): the proxy's header
# saying the request came over HTTPS, e.g. X-Forwarded-Proto. Only set it when the
# proxy always sets (or strips) that header, or clients could claim HTTPS.
_proxy_header = os.environ.get("SECURE_PROXY_SSL_HEADER", "").strip()
SECURE_PROXY_SSL_HEADER = (
    ("HTTP_" + _proxy_header.upper().replace("-", "_"), "https") if _proxy_header else None
)
SECURE_SSL_REDIRECT = envbool("SECURE_SSL_REDIRECT", "false")
SECURE_HSTS_SECONDS = envint("SECURE_HSTS_SECONDS", "0")
SECURE_HSTS_INCLUDE_SUBDOMAINS = envbool("SECURE_HSTS_INCLUDE_SUBDOMAINS", "false")
SECURE_HSTS_PRELOAD = envbool("SECURE_HSTS_PRELOAD", "false")
# Session and CSRF cookies only over HTTPS.
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = envbool("SECURE_COOKIES", "false")

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",  # intcomma: numbers grouped as the live view's JavaScript groups them
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI served from our static files, no CDN
    "channels",
    "django_rq",
    "projects",
    "axes",
    "endpoints",
    "experiments",
    "runs",
    "webhooks",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "axes.middleware.AxesMiddleware",  # last: it answers a locked-out login
]
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",  # first: it refuses locked-out logins before the password check
    "django.contrib.auth.backends.ModelBackend",
]
# Login lockout (django-axes): after LOGIN_FAILURE_LIMIT wrong passwords for one
# user name from one address, logins there are refused for LOGIN_LOCKOUT_MINUTES.
AXES_ENABLED = envbool("LOGIN_LOCKOUT", "true")
AXES_FAILURE_LIMIT = envint("LOGIN_FAILURE_LIMIT", "5")
AXES_COOLOFF_TIME = timedelta(minutes=envint("LOGIN_LOCKOUT_MINUTES", "15"))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
# Behind a proxy, the client's address is the proxy's: count it from X-Forwarded-For.
AXES_IPWARE_META_PRECEDENCE_ORDER = (
    ["HTTP_X_FORWARDED_FOR", "REMOTE_ADDR"] if _proxy_header else ["REMOTE_ADDR"]
)
AXES_IPWARE_PROXY_COUNT = 1 if _proxy_header else None  # the address the proxy saw, not one a client wrote

ROOT_URLCONF = "promptlooper_site.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "builtins": ["runs.templatetags.money"],  # |money on every page that shows a cost
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "projects.context_processors.projects",
            ],
        },
    },
]

WSGI_APPLICATION = "promptlooper_site.wsgi.application"
ASGI_APPLICATION = "promptlooper_site.asgi.application"

# SQLite in the project folder for a newcomer; postgres://... for a team.
DATABASE_URL = os.environ.get("DATABASE_URL", f"sqlite:///{BASE_DIR / 'db.sqlite3'}")
DATABASES = {"default": dj_database_url.parse(DATABASE_URL)}
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # Keep connections open between requests and jobs instead of one per request.
    DATABASES["default"]["CONN_MAX_AGE"] = envint("DB_CONN_MAX_AGE", "600")
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
    # The planner's guesses on large tables turn the JIT on for queries that then
    # spend most of their time compiling (284 ms of 301 measured); DB_JIT=1 allows it.
    if not envbool("DB_JIT", "0"):
        DATABASES["default"]["OPTIONS"] = {"options": "-c jit=off"}
else:
    # The in-process worker writes while the web server reads: wait for the
    # lock instead of failing, and let readers proceed beside one writer (WAL).
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 30,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    # Tests use a file too: an in-memory database locks whole tables between the
    # threads of the in-process worker instead of waiting.
    DATABASES["default"]["TEST"] = {"NAME": str(BASE_DIR / f"test_db_{os.getpid()}.sqlite3")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Unset = single-machine mode: in-process worker and in-memory channel layer.
REDIS_URL = os.environ.get("REDIS_URL", "")
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            # redis-py 8 times reads out after 5 s, as long as channels_redis's blocking
            # receive: idle WebSocket consumers would crash (django/channels_redis#422).
            "CONFIG": {"hosts": [{"address": REDIS_URL, "socket_timeout": 15}]},
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
RQ_QUEUES = {
    name: {"URL": REDIS_URL or "redis://127.0.0.1:6379/0", "DEFAULT_TIMEOUT": 3600 * 6}
    for name in ("default", "sweeps", "webhooks")
}

# Enqueue jobs only once the transaction that created their rows has committed;
# workers also take back the runs of workers that died (runs.queue.RecoveringWorker).
RQ = {"COMMIT_MODE": "on_db_commit", "WORKER_CLASS": "runs.queue.RecoveringWorker"}
# Threads of the in-process worker (single-machine mode).
INPROCESS_WORKERS = envint("INPROCESS_WORKERS", "4")

MAX_CONCURRENT_RUNS = envint("MAX_CONCURRENT_RUNS", "8")
# The HTTP client of LLM calls: "lean" (a keep-alive transport of our own, a fraction of
# httpx's CPU per call) or "httpx" (its own). Both honour HTTP_PROXY, HTTPS_PROXY, NO_PROXY.
LLM_HTTP_TRANSPORT = os.environ.get("LLM_HTTP_TRANSPORT", "lean").strip().lower()
if LLM_HTTP_TRANSPORT not in ("lean", "httpx"):
    raise ImproperlyConfigured(f"LLM_HTTP_TRANSPORT must be lean or httpx, got {LLM_HTTP_TRANSPORT!r}")
MAX_TOKENS_PER_SWEEP = envint("MAX_TOKENS_PER_SWEEP", "1000000")
CURRENCY = os.environ.get("CURRENCY", "USD")  # of the endpoints' prices and every cost shown
# `make run`'s admin password, the local model build's log and status.
VAR_DIR = Path(os.environ.get("VAR_DIR", BASE_DIR / "var"))
MAX_SWEEP_RUNS = envint("MAX_SWEEP_RUNS", "10000")
# Orchestrators that share one sweep (RQ jobs; several machines may take them).
SWEEP_WORKERS = envint("SWEEP_WORKERS", "4" if REDIS_URL else "1")
# A running run whose worker has not been heard from for this long is taken back.
SWEEP_STALE_AFTER_S = envint("SWEEP_STALE_AFTER_S", "60")
# Each project's answers are cached apart, so one team cannot learn another's outputs
# by sending the same prompt. A single team may share one cache across its projects.
CACHE_SHARED_ACROSS_PROJECTS = envbool("CACHE_SHARED_ACROSS_PROJECTS", "false")
# How often the web server and each worker look for such runs (0 = never; at start too).
SWEEP_RECOVERY_INTERVAL_S = envint("SWEEP_RECOVERY_INTERVAL_S", "30")
# Every prompt render is bounded (engine/templates.py): loop iterations of all its
# loops together, characters of the prompt, and wall time.
TEMPLATE_MAX_LOOP_ITERATIONS = envint("TEMPLATE_MAX_LOOP_ITERATIONS", "10000")
TEMPLATE_MAX_OUTPUT_CHARS = envint("TEMPLATE_MAX_OUTPUT_CHARS", "200000")
TEMPLATE_MAX_RENDER_S = envfloat("TEMPLATE_MAX_RENDER_S", "1.0")
# Webhook destinations on loopback/private/link-local addresses are refused unless allowed.
WEBHOOK_ALLOW_PRIVATE = envbool("WEBHOOK_ALLOW_PRIVATE", "false")
WEBHOOK_TIMEOUT_S = envint("WEBHOOK_TIMEOUT_S", "10")
# Seconds before the first webhook retry; each further retry waits twice as long.
WEBHOOK_RETRY_BASE_S = envint("WEBHOOK_RETRY_BASE_S", "2")
# Threads that send webhooks in single-machine mode, apart from the sweeps' threads.
WEBHOOK_WORKERS = envint("WEBHOOK_WORKERS", "2")

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/accounts/login/"

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    # JSON bodies (the dataset upload adds multipart): a form-encoded blank would
    # mean "absent" to DRF, which no schema can say.
    "DEFAULT_PARSER_CLASSES": ["promptlooper_site.parsers.JSONParser"],
    "TEST_REQUEST_DEFAULT_FORMAT": "json",  # what the API takes, for DRF's test client
    "DEFAULT_PAGINATION_CLASS": "promptlooper_site.pagination.Pagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    # Requests per user (or per address, before login); "" = no limit.
    "DEFAULT_THROTTLE_CLASSES": [
        "rest_framework.throttling.AnonRateThrottle",
        "rest_framework.throttling.UserRateThrottle",
    ],
    "DEFAULT_THROTTLE_RATES": {
        "anon": os.environ.get("API_THROTTLE_ANON", "60/minute") or None,
        "user": os.environ.get("API_THROTTLE_USER", "1200/minute") or None,
    },
}
SPECTACULAR_SETTINGS = {
    "TITLE": "PromptLooper API",
    "DESCRIPTION": "Run prompt and parameter sweeps against OpenAI-compatible endpoints.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Separate request/response components, so write-only fields (api_key) type correctly in clients.
    "COMPONENT_SPLIT_REQUEST": True,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "promptlooper_site.schema.add_error_responses",
    ],
    "ENUM_NAME_OVERRIDES": {
        "RunStatusEnum": "runs.models.RunStatus",
        "SweepStatusEnum": "runs.models.SweepStatus",
        "DeliveryStatusEnum": "webhooks.models.DeliveryStatus",
    },
}

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = BASE_DIR / "staticfiles"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "WARNING")},
}
