import os
import subprocess
import sys
from pathlib import Path

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
    result = load_settings(MAX_SWEEP_RUNS="lots")
    assert "MAX_SWEEP_RUNS must be an integer" in result.stderr
