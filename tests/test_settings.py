import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def load_settings(**env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k not in ("SECRET_KEY", "DEBUG", "REDIS_URL")}
    environ.update(env, DJANGO_SETTINGS_MODULE="promptlooper_site.settings")
    code = "import django; django.setup(); from django.conf import settings; print(settings.CHANNEL_LAYERS['default']['BACKEND'])"
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=environ, capture_output=True, text=True)


def test_production_refuses_to_start_without_a_secret_key():
    result = load_settings(DEBUG="false")
    assert result.returncode != 0
    assert "SECRET_KEY must be set when DEBUG is off" in result.stderr


def test_development_default_key_warns_loudly():
    result = load_settings(DEBUG="true")
    assert result.returncode == 0
    assert "SECRET_KEY is not set" in result.stderr


def test_no_redis_url_means_in_memory_channel_layer():
    assert "InMemoryChannelLayer" in load_settings(SECRET_KEY="x" * 40, DEBUG="false").stdout


def test_redis_url_selects_the_redis_channel_layer():
    result = load_settings(SECRET_KEY="x" * 40, DEBUG="false", REDIS_URL="redis://127.0.0.1:6379/0")
    assert "RedisChannelLayer" in result.stdout


def test_bad_integer_setting_says_which():
    result = load_settings(MAX_SWEEP_RUNS="lots", DEBUG="true")
    assert "MAX_SWEEP_RUNS must be an integer" in result.stderr


def test_debug_is_off_unless_asked_for():
    code = "import django; django.setup(); from django.conf import settings; print(settings.DEBUG)"
    environ = {k: v for k, v in os.environ.items() if k != "DEBUG"}
    environ.update(SECRET_KEY="x" * 60, DJANGO_SETTINGS_MODULE="promptlooper_site.settings")
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=environ, capture_output=True, text=True
    )
    assert result.stdout.strip() == "False"


def test_make_run_turns_debug_on():
    makefile = (ROOT / "Makefile").read_text()
    assert "DEBUG=true $(PY) manage.py run_local" in makefile


# The production environment the README documents (behind a TLS-terminating proxy).
PRODUCTION_ENV = {
    "DEBUG": "false",
    "SECRET_KEY": "k3Jq9vN2pX7mR4tY8wB1cF6hL0sD5gZ-aE_uI9oP2qW7eR3tY6uI1oP4aS8dF",
    "ALLOWED_HOSTS": "promptlooper.example.com",
    "CSRF_TRUSTED_ORIGINS": "https://promptlooper.example.com",
    "SECURE_PROXY_SSL_HEADER": "X-Forwarded-Proto",
    "SECURE_SSL_REDIRECT": "true",
    "SECURE_HSTS_SECONDS": "31536000",
    "SECURE_HSTS_INCLUDE_SUBDOMAINS": "true",
    "SECURE_HSTS_PRELOAD": "true",
    "SECURE_COOKIES": "true",
}


def manage(*args: str, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k not in ("SECRET_KEY", "DEBUG", "REDIS_URL")}
    environ.pop("DJANGO_SETTINGS_MODULE", None)
    environ.update(env)
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=environ, capture_output=True, text=True
    )


def test_the_documented_production_environment_passes_check_deploy():
    result = manage("check", "--deploy", "--fail-level", "WARNING", **PRODUCTION_ENV)
    assert result.returncode == 0, result.stderr + result.stdout
    assert "no issues" in result.stdout


def test_the_readme_documents_the_production_environment():
    readme = (ROOT / "README.md").read_text()
    for name, value in PRODUCTION_ENV.items():
        if name != "SECRET_KEY":
            assert f"{name}={value}" in readme, name


def test_the_proxy_header_setting_names_the_header_django_reads():
    code = "import django; django.setup(); from django.conf import settings; print(settings.SECURE_PROXY_SSL_HEADER)"
    environ = dict(os.environ, DJANGO_SETTINGS_MODULE="promptlooper_site.settings", **PRODUCTION_ENV)
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=environ, capture_output=True, text=True
    )
    assert result.stdout.strip() == "('HTTP_X_FORWARDED_PROTO', 'https')"


def database_options(**env: str) -> str:
    environ = {k: v for k, v in os.environ.items() if k not in ("DB_JIT",)}
    environ.update(
        env, DJANGO_SETTINGS_MODULE="promptlooper_site.settings", SECRET_KEY="x" * 40, DEBUG="false"
    )
    code = "import django; django.setup(); from django.conf import settings; print(settings.DATABASES['default'].get('OPTIONS', {}).get('options', ''))"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=environ, capture_output=True, text=True
    )
    return result.stdout.strip()


def test_postgresql_connections_run_without_jit_unless_db_jit_is_set():
    url = "postgres://postgres@127.0.0.1:5432/nowhere"
    assert database_options(DATABASE_URL=url) == "-c jit=off"
    assert database_options(DATABASE_URL=url, DB_JIT="1") == ""


@pytest.mark.django_db
def test_the_test_database_connection_has_the_jit_off():
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("the JIT is PostgreSQL's")
    with connection.cursor() as cursor:
        cursor.execute("SHOW jit")
        assert cursor.fetchone()[0] == "off"


def test_an_unknown_llm_http_transport_says_which_are_known():
    result = load_settings(LLM_HTTP_TRANSPORT="curl", DEBUG="true")
    assert result.returncode != 0
    assert "LLM_HTTP_TRANSPORT must be lean or httpx, got 'curl'" in result.stderr
