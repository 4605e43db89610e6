#!/usr/bin/env bash
# Set up everything the tests need, then run the whole suite (ruff and mypy included).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh --dev
exec .venv/bin/python -m pytest "$@"
