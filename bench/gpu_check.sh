#!/usr/bin/env bash
# Issue 6's GPU check, for a session lent an H100/H200: one command, about 5 to 7.5 minutes.
#
#   device run: command "bash bench/gpu_check.sh", carry [".whl"], timeout_s 560
#
# The GPU image has PyTorch, peft and accelerate but no diffusers: the diffusers wheel travels in .whl/
# (ignored by git; prepare it on the CPU machine once, from the repo root:
#   mkdir -p .git/info && echo /.whl/ >> .git/info/exclude
#   python -m pip download --no-deps --only-binary=:all: -d .whl diffusers==0.42.1 )
# Results: $OUT/gpu_bench.md (Markdown table, targets met / not met), $OUT/gpu_bench.json, $OUT/gpu_check.log.
# Extra arguments go to bench/gpu_bench.py (e.g. --only bf16,fp8 or --budget 300).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-bench/out}"
mkdir -p "$OUT"
PY=python3
if ! $PY -c "import diffusers" 2>/dev/null; then
    if ls .whl/diffusers-*.whl >/dev/null 2>&1; then
        $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
            || exit 3
        export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
    else
        echo "diffusers is not installed and .whl/diffusers-*.whl is missing (see the header of $0)" >&2
        exit 3
    fi
fi
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
    $PY -c "import torch, diffusers, peft; print('torch', torch.__version__, 'diffusers', diffusers.__version__, 'peft', peft.__version__, 'cuda', torch.cuda.is_available())"
    $PY bench/gpu_bench.py --out "$OUT" "$@"
} 2>&1 | tee "$OUT/gpu_check.log"
