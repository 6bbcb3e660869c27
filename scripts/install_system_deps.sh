#!/usr/bin/env bash
# Debian packages `make test` needs on a fresh machine: a C/C++ toolchain (the llama.cpp
# build of the bundled model), python3-venv (the virtualenv), Redis and PostgreSQL (the
# test services), Chromium and its driver (browser tests) and dash (the .env export is
# sourced in bash and in dash). Installs only what is missing; nothing to do: no apt.
set -eu
missing=()
{ command -v cc && command -v c++ && command -v make; } >/dev/null 2>&1 || missing+=(build-essential)
python3 -c "import ensurepip, venv" >/dev/null 2>&1 || missing+=(python3-venv)
{ command -v redis-server && command -v redis-cli; } >/dev/null 2>&1 || missing+=(redis-server)
{ command -v pg_lsclusters && command -v psql && command -v pg_isready \
  && ls /usr/lib/postgresql/*/bin/postgres; } >/dev/null 2>&1 || missing+=(postgresql)
[ -x /usr/bin/chromium ] || missing+=(chromium)
[ -x /usr/bin/chromedriver ] || missing+=(chromium-driver)
command -v dash >/dev/null 2>&1 || missing+=(dash)
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "installing ${missing[*]} (Debian packages)"
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
