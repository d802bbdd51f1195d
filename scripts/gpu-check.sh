#!/usr/bin/env bash
# The GPU check, one command on a machine with an NVIDIA GPU (under 8 minutes):
# the GPU-marked tests, then bench.gpu at SD 1.5 (512x512, 20 steps) and SDXL
# (1024x1024, 30 steps) shapes with random fp16 weights: service/raw at batch 1
# and at the best batch, images/s, eager vs compiled, recompiles after warm-up.
# Prints table rows for docs/performance.md.
#
#   bash scripts/gpu-check.sh [sdxl sd15]   # on the GPU host (wheels from scripts/gpu-wheels.sh in .whl/)
#   bash scripts/gpu-check.sh --toy         # the same steps at toy size on a CPU
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
toy=""; [ "${1:-}" = "--toy" ] && { toy="--toy"; shift; }
archs=("$@"); [ ${#archs[@]} -gt 0 ] || archs=(sdxl sd15)
export PYTHONUNBUFFERED=1  # figures reach a log even if the check is cut short
python=python3; [ -x .venv/bin/python ] && python=.venv/bin/python
if [ -z "$toy" ] && compgen -G ".whl/*.whl" >/dev/null; then
  # An offline host: what it lacks comes from wheels prepared on a connected machine.
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/imagegen-site .whl/*.whl || exit 1
  export PYTHONPATH="/tmp/imagegen-site:$PWD"
fi
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-4}"
status=0
run() {  # a step that fails is reported and the check goes on
  echo; echo "### $*"; local started=$SECONDS
  "$@" || { echo "### FAILED ($?): $*"; status=1; }
  echo "### $((SECONDS - started)) s"
}
[ -z "$toy" ] && run nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
run "$python" -c "import torch, diffusers; print('torch', torch.__version__, 'diffusers', diffusers.__version__, 'cuda', torch.cuda.is_available())"
# GPU-marked tests (they skip cleanly without CUDA; exit 5 means none were collected).
# A module that needs a package the host lacks must not stop the GPU tests from running.
echo; echo "### pytest -m gpu"
# The browser tests (never GPU) import playwright, which a GPU host lacks.
"$python" -m pytest -q -m gpu -p no:cacheprovider --continue-on-collection-errors \
  --ignore=tests/test_demo_browser.py tests; rc=$?
[ $rc -eq 0 ] || [ $rc -eq 5 ] || { echo "### FAILED: pytest -m gpu ($rc)"; status=1; }
for arch in "${archs[@]}"; do
  if [ -n "$toy" ]; then
    run "$python" -m bench.gpu --toy --compile --arch "$arch" --batches 1 2
  elif [ "$arch" = sdxl ]; then
    run "$python" -m bench.gpu --compile --arch sdxl --steps 30 --batches 1 2 --rounds 2
  else
    run "$python" -m bench.gpu --compile --arch "$arch" --steps 20 --batches 1 4 8 --rounds 3
  fi
done
echo; echo "GPU check $(date -u +%F) status $status"
exit $status
