#!/usr/bin/env bash
# First command: set everything up and start the web UI on http://127.0.0.1:5000.
# With no real models configured it opens the built-in demo workspace (tiny models, small dataset).
# Extra arguments go to qwen_webui.py (e.g. --port 5001, --workspace DIR).
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/setup.sh
exec .venv/bin/python qwen_webui.py "$@"
