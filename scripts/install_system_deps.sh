#!/usr/bin/env bash
# Debian packages the tests need: Chromium and its driver (browser tests), dash
# (the .env export is sourced in bash and in dash).
set -eu
if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ] && command -v dash >/dev/null; then
  exit 0
fi
echo "installing chromium, chromium-driver and dash (Debian packages)"
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium chromium-driver dash >/dev/null
