#!/usr/bin/env bash
# DiffGuard speed on a GPU with random-weight networks of the paper's sizes (ADM-256 uncond; LDM cin256 + VQ-f4),
# beside the paper's V100 figures and the card's FLOP floor. Prints one table; JSON in runs/gpu-check/.
#   benchmarks/gpu_check.sh           # GPU: float32 and bf16 autocast, channels_last; then production vs the
#                                     # authors' execution structure on the fmnist6 models (float32 and float64)
#   benchmarks/gpu_check.sh --tiny    # CPU smoke test in seconds
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-}"
if [[ -z "$PY" ]]; then
  if [[ -x .venv/bin/python ]]; then PY=.venv/bin/python; else PY=python3; fi
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1
OUT="${GPU_CHECK_OUT:-runs/gpu-check}"  # where the JSON records go
if [[ " $* " == *" --tiny "* ]]; then
  "$PY" benchmarks/gpu_check.py --n 2 --batch-size 2 --out "$OUT" "$@"
  exec "$PY" benchmarks/authors_structure.py --n 2 --batch-size 2 --threads 1 --device cpu --out "$OUT/authors"
fi
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
"$PY" benchmarks/gpu_check.py --precision off bf16 --channels-last --out "$OUT" "$@"
if ! "$PY" -c "from diffguard.data.fashion_mnist import load_fashion_mnist; load_fashion_mnist('test')" 2>/dev/null
then
  echo "authors' structure comparison skipped: no Fashion-MNIST files here (install dataset-fashion-mnist or set"
  echo "DIFFGUARD_DATA_ROOT to a folder with the four IDX files)"
  exit 0
fi
"$PY" benchmarks/authors_structure.py --preset fmnist6-clean-grad --n 256 --batch-size 256 --device cuda \
  --out "$OUT/authors-float32"
exec "$PY" benchmarks/authors_structure.py --preset fmnist6-clean-grad --n 64 --batch-size 64 --device cuda \
  --dtype float64 --out "$OUT/authors-float64"
