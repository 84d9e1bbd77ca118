#!/usr/bin/env bash
# GPU check (docs/deploy.md): trains the same job on a CPU worker, on a worker pinned
# to GPU 0 and, with two GPUs, on a two-GPU worker; prints epoch times against the
# CPU and writes gpu_check.json to $OUT (or the current folder).
#   bench/gpu_check.sh [--epochs N]
# Needs an NVIDIA driver (nvidia-smi) and the project installed with the worker and
# gpu extras: pip install -e ".[worker,gpu]". PYTHON picks the interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
command -v nvidia-smi >/dev/null || { echo "gpu_check: no nvidia-smi on PATH"; exit 2; }
nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv
"$PYTHON" - <<'PY'
import tensorflow as tf
gpus = tf.config.list_physical_devices("GPU")
print(f"gpu_check: tensorflow {tf.__version__} sees {len(gpus)} GPU(s)")
raise SystemExit(0 if gpus else 3)
PY
exec "$PYTHON" bench/gpu_check.py "$@"
