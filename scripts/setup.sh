#!/usr/bin/env bash
# Creates .venv and installs the pinned dependencies (torch==2.13.0 first, then the package).
# Usage: scripts/setup.sh [--dev]   (--dev adds the test and lint tools)
# Re-running is cheap: it reinstalls only when pyproject.toml or this script changed.
set -euo pipefail
cd "$(dirname "$0")/.."

extras=""
if [ "${1:-}" = "--dev" ]; then extras="[dev]"; fi

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
# shellcheck disable=SC1091
. .venv/bin/activate

base=".venv/.installed-$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)"
stamp="$base${extras:+-dev}"
# a dev install also satisfies a plain one
if [ ! -f "$stamp" ] && { [ -n "$extras" ] || [ ! -f "$base-dev" ]; }; then
  echo "== installing dependencies into .venv (first run takes a few minutes)"
  # torch first: 2.13.0 is the CPU build on this project's machines; a looser spec would pull CUDA wheels.
  pip install --quiet --disable-pip-version-check "torch==2.13.0"
  pip install --quiet --disable-pip-version-check -e ".${extras}"
  rm -f .venv/.installed-*
  touch "$stamp"
fi
