#!/usr/bin/env bash
# Runs every test twice: on SQLite (with engine coverage), then on PostgreSQL.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
PG_URL=${TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/promptlooper}
# The project's own set-up installs the bundled models: their tests must run, not skip.
export LOCAL_MODEL_REQUIRED=${LOCAL_MODEL_REQUIRED:-1}

echo "== pass 1: SQLite (single-machine mode) =="
env -u DATABASE_URL -u REDIS_URL "$PY" -m pytest --cov --cov-report=term --cov-fail-under=85 "$@"

echo "== pass 2: PostgreSQL (and distributed mode: Redis + RQ worker processes) =="
# The engine alone touches no database, and the browser and bundled-model tests
# exercise no database-specific code: everything else runs again on PostgreSQL.
env -u REDIS_URL DATABASE_URL="$PG_URL" "$PY" -m pytest --ignore=tests/engine -m "not browser and not local_model" "$@"
