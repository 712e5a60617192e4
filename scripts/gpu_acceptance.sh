#!/usr/bin/env bash
# GPU acceptance run: builds the kernels (and the plugin where TensorRT's headers are) for this GPU's
# architecture, runs every GPU test and the kernel benchmark, and writes the results as markdown with the GPU,
# driver, CUDA and date. Meant to finish in under 10 minutes on one GPU. What cannot run on a machine is
# skipped with the reason (no TensorRT headers, as with TensorRT from pip: no C++ plugin and no plugin tests;
# no cmake/nvcc/C++ compiler: no build; no Triton, as on Jetson: no torch.compile; the time budget spent).
#
#   scripts/gpu_acceptance.sh [OUT.md]                (default: docs/gpu_acceptance.md)
#   scripts/gpu_acceptance.sh --dry-run [--profile host|pip-trt|jetpack6]
#       print every command it would run and every skip with its reason, for this machine (host) or as on a
#       machine with TensorRT from pip or on JetPack 6; needs no GPU, runs nothing, writes nothing
#
# Environment: PYTHON (default: python3; needs a CUDA build of PyTorch and this package's test dependencies),
# TENSORRT_ROOT (TensorRT headers for the plugin), BENCH_ARGS (scripts/bench_eca_kernels.py options, default
# --dtype fp16: both dtypes with torch.compile take longer than the budget),
# TIME_LIMIT (seconds for the whole run, default 540).
set -uo pipefail
cd "$(dirname "$0")/.."

DRY=0
PROFILE=host
OUT=docs/gpu_acceptance.md
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --profile) PROFILE=${2:-}; shift ;;
    --profile=*) PROFILE=${1#--profile=} ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    -*) echo "error: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) OUT=$1 ;;
  esac
  shift
done
case "$PROFILE" in host|pip-trt|jetpack6) ;; *) echo "error: --profile takes host, pip-trt or jetpack6" >&2; exit 2 ;; esac
[ "$PROFILE" != host ] && [ "$DRY" -eq 0 ] && { echo "error: --profile simulates a machine: only with --dry-run" >&2; exit 2; }

PYTHON=${PYTHON:-python3}
TIME_LIMIT=${TIME_LIMIT:-540}
BENCH=${BENCH_ARGS:---dtype fp16}
START=$(date +%s)
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

exec 3>&1  # the terminal, for what steps print while their output goes to a log
fail() { echo "error: $*" >&2; exit 2; }
left() { echo $((TIME_LIMIT - ($(date +%s) - START))); }
note() { echo "$*"; }
SKIPS=()
skip() { SKIPS+=("$1: $2"); echo "skip $1: $2" >&3; }

# step NAME RESERVE CMD...: run CMD under `timeout` with what is left of the budget minus RESERVE seconds (kept
# for the steps after it); skipped (exit 124 recorded) once nothing is left: `timeout 0` would remove the limit
# and a negative one exits 125.
step() {
  local name=$1 reserve=$2 limit
  shift 2
  limit=$(( $(left) - reserve ))
  if [ "$limit" -le 0 ]; then
    skip "$name" "the time budget (TIME_LIMIT=${TIME_LIMIT}s) is spent"
    return 124
  fi
  if [ "$DRY" -eq 1 ]; then
    echo "would run: timeout $limit $*" >&3
    return 0
  fi
  timeout "$limit" "$@"
}

# --- the machine -------------------------------------------------------------------------------------------
if [ "$DRY" -eq 0 ]; then
  command -v nvidia-smi >/dev/null || fail "nvidia-smi not found: this script needs an NVIDIA GPU and its driver"
  "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" \
    || fail "$PYTHON has no CUDA build of PyTorch, or no GPU is visible"
fi
smi() { nvidia-smi --query-gpu="$1" --format=csv,noheader 2>/dev/null | head -1; }
GPU=$(smi name); DRIVER=$(smi driver_version); CC=$(smi compute_cap)
[ "$PROFILE" = jetpack6 ] && CC="[N/A]"  # what nvidia-smi reports on Jetson (integrated GPU)
if ! [[ "$CC" =~ ^[0-9]+\.[0-9]+$ ]]; then  # Jetson: from the CUDA runtime instead
  note "compute capability from nvidia-smi is '${CC:-none}': asking the CUDA runtime (torch.cuda.get_device_capability)"
  CC=$("$PYTHON" -c "import torch; print('%d.%d' % torch.cuda.get_device_capability())" 2>/dev/null || echo "")
fi
ARCH=${CC/./}
if [ -z "$ARCH" ]; then
  [ "$DRY" -eq 0 ] && fail "cannot tell this GPU's compute capability (nvidia-smi and torch.cuda both failed)"
  ARCH="<this GPU's, e.g. 87 on Orin>"
fi

NVCC=$(command -v nvcc || { [ -x /usr/local/cuda/bin/nvcc ] && echo /usr/local/cuda/bin/nvcc; } || echo "")
CXX_FOUND=$(command -v "${CXX:-c++}" || command -v g++ || command -v clang++ || echo "")
TOOLS_MISSING=""
command -v cmake >/dev/null || TOOLS_MISSING+=" cmake"
[ -n "$NVCC" ] || TOOLS_MISSING+=" nvcc"
[ -n "$CXX_FOUND" ] || TOOLS_MISSING+=" a C++ compiler"

HEADERS=""
for dir in ${TENSORRT_ROOT:+"$TENSORRT_ROOT/include"} /usr/include/x86_64-linux-gnu /usr/include/aarch64-linux-gnu \
           /usr/local/TensorRT/include /usr/local/tensorrt/include /opt/tensorrt/include; do
  [ -f "$dir/NvInferVersion.h" ] && { HEADERS=$dir; break; }
done
[ "$PROFILE" = pip-trt ] && HEADERS=""          # pip's tensorrt wheels ship no headers
[ "$PROFILE" = jetpack6 ] && HEADERS=/usr/include/aarch64-linux-gnu  # JetPack's TensorRT debs do

CUDA=$([ -n "$NVCC" ] && "$NVCC" --version 2>/dev/null | sed -n 's/.*release \([0-9.]*\).*/\1/p')
TORCH=$("$PYTHON" -c "import torch; print(torch.__version__, 'CUDA', torch.version.cuda)" 2>/dev/null || echo "none")
TRT=$("$PYTHON" -c "import tensorrt; print(tensorrt.__version__)" 2>/dev/null || echo "not installed")
QDP=$("$PYTHON" -c "
try:
    from eca_deploy.plugin.qdp import qdp_status
except ImportError:
    print('no (this eca-deploy has no AOT Python plugin)')
else:
    ok, why = qdp_status()
    print(('yes: ' if ok else 'no: ') + why)" 2>/dev/null || echo "no (cannot ask)")
DATE=$(date -u +"%Y-%m-%d %H:%M UTC")
echo "GPU ${GPU:-none} (sm_$ARCH), driver ${DRIVER:-none}, CUDA ${CUDA:-none}, torch $TORCH, TensorRT $TRT" \
  "(profile $PROFILE)"

# --- what can run ------------------------------------------------------------------------------------------
BUILD_OK=1
if [ -n "$TOOLS_MISSING" ] && [ "$PROFILE" = host ]; then
  skip "build, kernel GPU tests, kernel benchmark, C++ plugin" "not installed:$TOOLS_MISSING"
  BUILD_OK=0
fi
PLUGIN_OK=$BUILD_OK
if [ "$BUILD_OK" -eq 1 ] && [ -z "$HEADERS" ]; then
  skip "C++ TensorRT plugin and tests/test_plugin_tensorrt.py" \
    "no TensorRT headers (NvInferVersion.h; TensorRT from pip ships none): set TENSORRT_ROOT to an install with include/"
  PLUGIN_OK=0
fi
echo "TensorRT plugin for this machine: $([ "$PLUGIN_OK" -eq 1 ] && echo "the C++ library (headers in $HEADERS)" \
  || echo "no C++ library"); AOT Python plugin: $QDP"
if [ "$PROFILE" = jetpack6 ] || ! "$PYTHON" -c "import triton" >/dev/null 2>&1; then
  skip "torch.compile in the kernel benchmark" "Triton is not installed (none on Jetson)"
fi

WORK=$([ "$DRY" -eq 1 ] && echo "<tmp>" || mktemp -d)
[ "$DRY" -eq 0 ] && trap 'rm -rf "$WORK"' EXIT
BUILD=$WORK/build
log() { if [ "$DRY" -eq 1 ]; then echo /dev/null; else echo "$WORK/$1"; fi; }

# 1. Build for this architecture only (a few minutes less than every default architecture).
BUILD_RC=skipped
if [ "$BUILD_OK" -eq 1 ]; then
  args=(plugin build --build-dir "$BUILD" --cuda-archs "$ARCH")
  [ -n "${TENSORRT_ROOT:-}" ] && [ "$PLUGIN_OK" -eq 1 ] && args+=(--tensorrt-root "$TENSORRT_ROOT")
  step build 240 "$PYTHON" -m eca_deploy.cli.main "${args[@]}" > "$(log build.txt)" 2>&1
  BUILD_RC=$?
  export ECA_DEPLOY_KERNELS="$BUILD"
  if [ "$DRY" -eq 0 ] && [ "$PLUGIN_OK" -eq 1 ] && [ ! -f "$BUILD/libeca_trt_plugin.so" ]; then
    skip "tests/test_plugin_tensorrt.py" "the build made no libeca_trt_plugin.so (see the build log)"
    PLUGIN_OK=0
  fi
  [ "$PLUGIN_OK" -eq 1 ] && export ECA_DEPLOY_PLUGIN="$BUILD"
  [ "$DRY" -eq 1 ] && echo "would export: ECA_DEPLOY_KERNELS=$BUILD${ECA_DEPLOY_PLUGIN:+ ECA_DEPLOY_PLUGIN=$BUILD}"
fi

# 2. Every GPU test (the ones marked gpu), then the host execution of the kernels for comparison.
PYTEST=(-m pytest -q -p no:cacheprovider -m gpu -rs)
[ "$PLUGIN_OK" -eq 1 ] || PYTEST+=(--ignore=tests/test_plugin_tensorrt.py)
[ "$BUILD_OK" -eq 1 ] || PYTEST+=(--ignore=tests/test_kernels_gpu.py)
step "GPU tests" 90 "$PYTHON" "${PYTEST[@]}" tests > "$(log tests.txt)" 2>&1
TESTS_RC=$?
step "host execution of the kernels" 60 "$PYTHON" -m pytest -q -p no:cacheprovider tests/test_kernels_host.py \
  > "$(log host.txt)" 2>&1
HOST_RC=$?

# 3. The kernel benchmark (CUDA graphs, interleaved rounds), within what is left.
BENCH_RC=skipped
if [ "$BUILD_OK" -eq 1 ]; then
  # shellcheck disable=SC2086
  step "kernel benchmark" 10 "$PYTHON" scripts/bench_eca_kernels.py --kernels "$BUILD" $BENCH > "$(log bench.md)" \
    2> "$(log bench.err)"
  BENCH_RC=$?
fi

if [ "$DRY" -eq 1 ]; then
  echo "would write: $OUT"
  echo "dry run: nothing was run or written"
  exit 0
fi

status() { case "$1" in 0) echo passed ;; skipped) echo skipped ;; 124) echo "FAILED (time budget)" ;; *) echo "FAILED (exit $1)" ;; esac; }
summary() { [ -f "$1" ] && grep -E "^(=+ )?[0-9]+ (passed|failed|skipped|error)|(passed|failed|skipped) in " "$1" | tail -1; }
{
  echo "# GPU acceptance run"
  echo
  echo "$DATE, \`scripts/gpu_acceptance.sh\` ($(( $(date +%s) - START )) s)."
  echo
  echo "| | |"
  echo "| --- | --- |"
  echo "| GPU | $GPU (sm_$ARCH) |"
  echo "| driver | $DRIVER |"
  echo "| CUDA (nvcc) | ${CUDA:-none} |"
  echo "| PyTorch | $TORCH |"
  echo "| TensorRT | $TRT |"
  echo "| AOT Python plugin | $QDP |"
  echo "| build for sm_$ARCH | $(status "$BUILD_RC") |"
  echo "| GPU tests (\`pytest -m gpu\`) | $(status $TESTS_RC): $(summary "$WORK/tests.txt") |"
  echo "| host execution of the kernels | $(status $HOST_RC): $(summary "$WORK/host.txt") |"
  echo "| kernel benchmark | $(status "$BENCH_RC") |"
  for s in "${SKIPS[@]}"; do echo "| skipped | $s |"; done
  echo
  echo "## Kernel benchmark"
  echo
  echo "\`python scripts/bench_eca_kernels.py --kernels BUILD $BENCH\`: microseconds per call from"
  echo "CUDA graph replays (median over interleaved rounds, ± half the spread), GB/s of the minimum traffic."
  echo
  [ -f "$WORK/bench.md" ] && cat "$WORK/bench.md"
  [ -s "$WORK/bench.err" ] && { echo; echo '```'; tail -20 "$WORK/bench.err"; echo '```'; }
  echo
  echo "## GPU tests"
  echo
  echo '```'
  [ -f "$WORK/tests.txt" ] && grep -E "^(FAILED|ERROR|SKIPPED)|passed|failed" "$WORK/tests.txt" | tail -40
  echo '```'
  if [ "$BUILD_RC" != 0 ] && [ -f "$WORK/build.txt" ]; then echo; echo '```'; tail -20 "$WORK/build.txt"; echo '```'; fi
} > "$OUT.tmp" && mv "$OUT.tmp" "$OUT"
echo "wrote $OUT"
ok() { [ "$1" = 0 ] || [ "$1" = skipped ]; }
ok "$BUILD_RC" && ok "$TESTS_RC" && ok "$HOST_RC" && ok "$BENCH_RC"
