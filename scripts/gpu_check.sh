#!/usr/bin/env bash
# GPU check, for a machine with a CUDA device (run from a checkout after `make install`,
# with TORCH_SPEC / PIP_EXTRA for a CUDA wheel, see the Makefile):
#
#   bash scripts/gpu_check.sh            # prints the device, the gpu tests, then one table
#
# 1. the tests marked `gpu` (tests/test_gpu.py; skipped on machines without a GPU);
# 2. scripts/gpu_check.py: item encoding with the real MiniLM (items/s), the smoke config and
#    one MiniLM finetune epoch on the bundled data in fp32 / bf16 / fp16 (seconds per epoch),
#    and one full-ranking pass on the device against float64 on the CPU (users/s, same ranks);
#    every row with its peak GPU memory.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
"$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device visible to torch'; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))"
"$PY" -m pytest -m gpu tests/test_gpu.py -q -p no:cacheprovider
"$PY" scripts/gpu_check.py "$@"
