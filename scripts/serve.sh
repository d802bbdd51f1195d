#!/usr/bin/env bash
# Installs what is needed and starts the service on 127.0.0.1:8000 with the embedded model.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
exec .venv/bin/imagegen serve "$@"
