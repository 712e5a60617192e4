#!/usr/bin/env bash
# GPU acceptance run: builds the kernels (and the plugin where TensorRT's headers are) for this GPU's
# architecture, runs every GPU test and the kernel benchmark, and writes the results as markdown with the GPU,
# driver, CUDA and date. Meant to finish in under 10 minutes on one GPU.
#
#   scripts/gpu_acceptance.sh [OUT.md]        (default: docs/gpu_acceptance.md)
#
# Environment: PYTHON (default: python3; needs a CUDA build of PyTorch and this package's test dependencies),
# TENSORRT_ROOT (TensorRT headers for the plugin), BENCH_ARGS (scripts/bench_eca_kernels.py options, default
# --dtype fp16: both dtypes with torch.compile take longer than the budget),
# TIME_LIMIT (seconds for the whole run, default 540).
set -uo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
OUT=${1:-docs/gpu_acceptance.md}
TIME_LIMIT=${TIME_LIMIT:-540}
START=$(date +%s)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

left() { echo $((TIME_LIMIT - ($(date +%s) - START))); }
fail() { echo "error: $*" >&2; exit 2; }

command -v nvidia-smi >/dev/null || fail "nvidia-smi not found: this script needs an NVIDIA GPU and its driver"
"$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" \
  || fail "$PYTHON has no CUDA build of PyTorch, or no GPU is visible"

GPU=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
DRIVER=$(nvidia-smi --query-gpu=driver_version --format=csv,noheader | head -1)
CC=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1)
ARCH=${CC/./}
NVCC=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
CUDA=$("$NVCC" --version 2>/dev/null | sed -n 's/.*release \([0-9.]*\).*/\1/p')
TORCH=$("$PYTHON" -c "import torch; print(torch.__version__, 'CUDA', torch.version.cuda)")
TRT=$("$PYTHON" -c "import tensorrt; print(tensorrt.__version__)" 2>/dev/null || echo "not installed")
DATE=$(date -u +"%Y-%m-%d %H:%M UTC")
echo "GPU $GPU (sm_$ARCH), driver $DRIVER, CUDA $CUDA, torch $TORCH, TensorRT $TRT"

# 1. Build for this architecture only (a few minutes less than every default architecture).
BUILD=$WORK/build
BUILD_ARGS=(plugin build --build-dir "$BUILD" --cuda-archs "$ARCH")
[ -n "${TENSORRT_ROOT:-}" ] && BUILD_ARGS+=(--tensorrt-root "$TENSORRT_ROOT")
timeout "$(left)" "$PYTHON" -m eca_deploy.cli.main "${BUILD_ARGS[@]}" > "$WORK/build.txt" 2>&1
BUILD_RC=$?
export ECA_DEPLOY_KERNELS="$BUILD" ECA_DEPLOY_PLUGIN="$BUILD"

# 2. Every GPU test (the ones marked gpu), then the host execution of the kernels for comparison.
timeout "$(left)" "$PYTHON" -m pytest -q -p no:cacheprovider -m gpu -rs tests > "$WORK/tests.txt" 2>&1
TESTS_RC=$?
timeout "$(left)" "$PYTHON" -m pytest -q -p no:cacheprovider tests/test_kernels_host.py > "$WORK/host.txt" 2>&1
HOST_RC=$?

# 3. The kernel benchmark (CUDA graphs, interleaved rounds), within what is left.
# shellcheck disable=SC2086
timeout "$(( $(left) > 30 ? $(left) - 15 : 15 ))" "$PYTHON" scripts/bench_eca_kernels.py --kernels "$BUILD" \
  ${BENCH_ARGS:---dtype fp16} > "$WORK/bench.md" 2> "$WORK/bench.err"
BENCH_RC=$?

status() { [ "$1" -eq 0 ] && echo "passed" || echo "FAILED (exit $1)"; }
summary() { grep -E "^(=+ )?[0-9]+ (passed|failed|skipped|error)|(passed|failed|skipped) in " "$1" | tail -1; }
{
  echo "# GPU acceptance run"
  echo
  echo "$DATE, \`scripts/gpu_acceptance.sh\` ($(( $(date +%s) - START )) s)."
  echo
  echo "| | |"
  echo "| --- | --- |"
  echo "| GPU | $GPU (sm_$ARCH) |"
  echo "| driver | $DRIVER |"
  echo "| CUDA (nvcc) | $CUDA |"
  echo "| PyTorch | $TORCH |"
  echo "| TensorRT | $TRT |"
  echo "| build for sm_$ARCH | $(status $BUILD_RC) |"
  echo "| GPU tests (\`pytest -m gpu\`) | $(status $TESTS_RC): $(summary "$WORK/tests.txt") |"
  echo "| host execution of the kernels | $(status $HOST_RC): $(summary "$WORK/host.txt") |"
  echo "| kernel benchmark | $(status $BENCH_RC) |"
  echo
  echo "## Kernel benchmark"
  echo
  echo "\`python scripts/bench_eca_kernels.py --kernels BUILD ${BENCH_ARGS:---dtype fp16}\`: microseconds per call from"
  echo "CUDA graph replays (median over interleaved rounds, ± half the spread), GB/s of the minimum traffic."
  echo
  cat "$WORK/bench.md"
  [ -s "$WORK/bench.err" ] && { echo; echo '```'; tail -20 "$WORK/bench.err"; echo '```'; }
  echo
  echo "## GPU tests"
  echo
  echo '```'
  grep -E "^(FAILED|ERROR|SKIPPED)|passed|failed" "$WORK/tests.txt" | tail -40
  echo '```'
  if [ "$BUILD_RC" -ne 0 ]; then echo; echo '```'; tail -20 "$WORK/build.txt"; echo '```'; fi
} > "$OUT.tmp" && mv "$OUT.tmp" "$OUT"
echo "wrote $OUT"
[ "$BUILD_RC" -eq 0 ] && [ "$TESTS_RC" -eq 0 ] && [ "$HOST_RC" -eq 0 ] && [ "$BENCH_RC" -eq 0 ]
