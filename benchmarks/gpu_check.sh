#!/usr/bin/env bash
# DiffGuard speed on a GPU with random-weight networks of the paper's sizes (ADM-256 uncond; LDM cin256 + VQ-f4),
# beside the paper's V100 figures and the card's FLOP floor. Prints one table; JSON in runs/gpu-check/.
#   benchmarks/gpu_check.sh           # GPU: float32 and bf16 autocast, channels_last
#   benchmarks/gpu_check.sh --tiny    # CPU smoke test in seconds
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-}"
if [[ -z "$PY" ]]; then
  if [[ -x .venv/bin/python ]]; then PY=.venv/bin/python; else PY=python3; fi
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1
if [[ " $* " == *" --tiny "* ]]; then
  exec "$PY" benchmarks/gpu_check.py --n 2 --batch-size 2 "$@"
fi
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
exec "$PY" benchmarks/gpu_check.py --precision off bf16 --channels-last "$@"
