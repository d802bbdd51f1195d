#!/usr/bin/env bash
# Installs the test dependencies and runs the whole suite (CI runs exactly this).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# The tests drive a real headless Chromium, a real Redis and nginx (the deploy's
# load balancer), all from Debian.
if ! command -v chromium >/dev/null || ! command -v redis-server >/dev/null \
    || ! command -v nginx >/dev/null; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq chromium redis-server nginx-light >/dev/null
fi
bash scripts/setup.sh "[test]"
.venv/bin/ruff check .
.venv/bin/mypy
.venv/bin/python -m pytest -q "$@"
