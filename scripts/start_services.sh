#!/usr/bin/env bash
# Starts the local Redis and PostgreSQL the test suite uses, if they are down, and makes
# sure the tests' connection (user postgres on 127.0.0.1:5432, no password) is accepted.
# Safe to run again: with everything up and reachable it changes nothing.
set -u
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
PG_PORT="${PG_PORT:-5432}"  # the tests use 5432

if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  echo "starting redis"
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
fi

# Debian's cluster on the port (pg_lsclusters -h: version, name, port, status, ...).
PG_VERSION=""; PG_CLUSTER=""
if command -v pg_lsclusters >/dev/null 2>&1; then
  read -r PG_VERSION PG_CLUSTER _ < <(pg_lsclusters -h 2>/dev/null | awk -v port="$PG_PORT" '$3 == port' | head -n 1) || true
fi
if ! pg_isready -h 127.0.0.1 -p "$PG_PORT" >/dev/null 2>&1; then
  if [ -z "$PG_CLUSTER" ]; then
    echo "no PostgreSQL cluster on port $PG_PORT (pg_lsclusters): run scripts/install_system_deps.sh" >&2
    exit 1
  fi
  echo "starting postgresql $PG_VERSION/$PG_CLUSTER"
  $SUDO pg_ctlcluster --skip-systemctl-redirect "$PG_VERSION" "$PG_CLUSTER" start
fi

for _ in $(seq 1 30); do
  redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && pg_isready -h 127.0.0.1 -p "$PG_PORT" >/dev/null 2>&1 && break
  sleep 1
done
if ! { redis-cli -h 127.0.0.1 -p 6379 ping && pg_isready -h 127.0.0.1 -p "$PG_PORT"; } >/dev/null 2>&1; then
  echo "redis or postgresql did not come up" >&2
  exit 1
fi

connects() { psql -w -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -Atc "select 1" >/dev/null 2>&1; }
connects && exit 0

# pg_hba.conf takes the first line that matches: the trust line goes before every rule.
TRUST="host all postgres 127.0.0.1/32 trust"
HBA="/etc/postgresql/$PG_VERSION/$PG_CLUSTER/pg_hba.conf"
if [ -z "$PG_CLUSTER" ] || ! $SUDO test -f "$HBA"; then
  echo "postgres@127.0.0.1:$PG_PORT refuses a connection without a password, and there is no" \
    "Debian cluster's pg_hba.conf to change: allow it (trust) yourself" >&2
  exit 1
fi
if ! $SUDO grep -qxF "$TRUST" "$HBA"; then
  echo "letting user postgres connect from 127.0.0.1 without a password: $HBA"
  $SUDO test -e "$HBA.before-promptlooper" || $SUDO cp -p "$HBA" "$HBA.before-promptlooper"
  edited="$(mktemp)"
  $SUDO awk -v trust="$TRUST" '
    !done && /^[[:space:]]*(local|host)/ {
      print "# The PromptLooper tests connect as postgres@127.0.0.1 without a password (scripts/start_services.sh)."
      print trust; done = 1
    }
    { print }
    END { if (!done) print trust }
  ' "$HBA" >"$edited"
  $SUDO tee "$HBA" <"$edited" >/dev/null  # keeps the file's owner and mode
  rm -f "$edited"
fi
$SUDO pg_ctlcluster --skip-systemctl-redirect "$PG_VERSION" "$PG_CLUSTER" reload
for _ in $(seq 1 10); do
  connects && exit 0
  sleep 1
done
echo "postgres@127.0.0.1:$PG_PORT still refuses a connection without a password: see $HBA" >&2
exit 1
