#!/usr/bin/env bash
# The CUDA path, where a CUDA GPU is present: the channel block measured under PyTorch on the GPU, a prune
# to a latency budget timed on it, and measured speed-ups of dense vs pruned at batch 1 and 32. No network needed.
#
# Needs on the GPU machine: python3 with torch (CUDA) and torchvision, onnx, onnxruntime, typer, rich,
# matplotlib, pyyaml, numpy, scipy, pillow, packaging; and torch-pruning, pydantic (+ pydantic-core,
# annotated-types, typing-inspection), onnxslim as wheels in .whl/ when the machine lacks them (download them
# here as /work/.library/device/README.md says: `pip download --no-deps --only-binary=:all:
# --python-version 3.12 ... -d .whl torch-pruning pydantic pydantic-core annotated-types typing-inspection
# onnxslim`). Writes $OUT/gpu_check.json (or benchmarks/results/gpu_check.json when OUT is unset).
# Time: about 3 minutes on one H200 (resnet18 and mobilenet_v2 at 224 px; budget 8 minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
RESULT="${OUT:-benchmarks/results}/gpu_check.json"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader || true
timeout 480 python3 benchmarks/gpu_check.py --out "$RESULT"
echo "gpu check: $RESULT"
