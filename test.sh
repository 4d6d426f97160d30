#!/usr/bin/env bash
# Second command: set up (with test tools) and run the whole test suite on the CPU.
# Extra arguments go to pytest (e.g. ./test.sh -k params).
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/setup.sh --dev
bash scripts/browser_deps.sh  # Debian chromium and fonts for tests/browser (apt-get as root; else one line)
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 OMP_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false
.venv/bin/ruff check src tests bench qwen_*.py studio_launch.py
exec .venv/bin/python -m pytest "$@"
