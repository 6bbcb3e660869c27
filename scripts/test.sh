#!/usr/bin/env bash
# Runs every test twice: on SQLite (with engine coverage), then on PostgreSQL.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
PG_URL=${TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/promptlooper}

echo "== pass 1: SQLite =="
env -u DATABASE_URL "$PY" -m pytest --cov --cov-report=term --cov-fail-under=85 "$@"

echo "== pass 2: PostgreSQL =="
# The engine alone touches no database; everything else runs again on PostgreSQL.
DATABASE_URL="$PG_URL" "$PY" -m pytest --ignore=tests/engine -m "not browser" "$@"
