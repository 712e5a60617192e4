#!/usr/bin/env bash
# GPU acceptance run, one command in under 8 minutes on one GPU, with nothing to install: a preflight lists what this
# machine has and picks the steps that can run; each step's result is written to OUT.md as soon as it is known (the
# benchmark's rows as they are measured). Steps, in order:
#   1. build libeca_kernels.so for this GPU's architecture (cmake; nvcc alone where cmake is missing), and the C++
#      TensorRT plugin where TensorRT's headers are
#   2. the kernels against the float64 reference on the GPU (python -m tests.kernels_gpu_checks: no pytest needed)
#   3. the ahead-of-time TensorRT plugin's PTX launched with the plugin's own launch (driver API; no TensorRT needed)
#   4. the kernel benchmark (scripts/bench_eca_kernels.py: buffers rotated past L2, rotated round order)
#   5. the other GPU tests (pytest -m gpu) and the host execution of the kernels, where pytest and the CLI's
#      dependencies are installed
# The exit status is non-zero when a step failed, and 3 when no GPU step ran at all.
#
#   scripts/gpu_acceptance.sh [OUT.md]                (default: docs/gpu_acceptance.md)
#   scripts/gpu_acceptance.sh --dry-run [--profile host|pip-trt|jetpack6]
#       print the preflight, every command it would run and every skip with its reason, for this machine (host) or
#       as on a machine with TensorRT from pip or on JetPack 6; a GPU is assumed; runs nothing, writes nothing
#
# Environment: PYTHON (default: python3, with a CUDA build of PyTorch), TENSORRT_ROOT (TensorRT headers for the C++
# plugin), BENCH_ARGS (scripts/bench_eca_kernels.py options, default --dtype fp16 --no-compile: torch.compile's
# compilation of every shape alone takes longer than the budget), TIME_LIMIT (seconds for the whole run, default 450).
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
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    -*) echo "error: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) OUT=$1 ;;
  esac
  shift
done
case "$PROFILE" in host|pip-trt|jetpack6) ;; *) echo "error: --profile takes host, pip-trt or jetpack6" >&2; exit 2 ;; esac
[ "$PROFILE" != host ] && [ "$DRY" -eq 0 ] && { echo "error: --profile simulates a machine: only with --dry-run" >&2; exit 2; }

PYTHON=${PYTHON:-python3}
TIME_LIMIT=${TIME_LIMIT:-450}
BENCH=${BENCH_ARGS:---dtype fp16 --no-compile}
START=$(date +%s)
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

exec 3>&1  # the terminal, for what steps print while their output goes to a log
fail() { echo "error: $*" >&2; exit 2; }
left() { echo $((TIME_LIMIT - ($(date +%s) - START))); }
SKIPS=()
skip() { SKIPS+=("$1: $2"); echo "skip $1: $2" >&3; }
has() { "$PYTHON" -c "import $1" >/dev/null 2>&1; }

# --- preflight: what this machine has ----------------------------------------------------------------------------
if [ "$DRY" -eq 0 ]; then
  command -v nvidia-smi >/dev/null || fail "nvidia-smi not found: this script needs an NVIDIA GPU and its driver"
fi
# one import of torch (seconds): "VERSION CUDA CC" (CC empty without a usable GPU)
read -r TORCH_VERSION TORCH_CUDA_VERSION TORCH_CC < <("$PYTHON" -c "
import torch
ok = torch.cuda.is_available()
print(torch.__version__, torch.version.cuda, '%d.%d' % torch.cuda.get_device_capability() if ok else '')" 2>/dev/null \
  || echo "none none")
if [ "$DRY" -eq 0 ] && [ -z "${TORCH_CC:-}" ]; then
  fail "$PYTHON has no CUDA build of PyTorch, or no GPU is visible"
fi
smi() { nvidia-smi --query-gpu="$1" --format=csv,noheader 2>/dev/null | head -1; }
GPU=$(smi name); DRIVER=$(smi driver_version); CC=$(smi compute_cap)
[ "$PROFILE" = jetpack6 ] && CC="[N/A]"  # what nvidia-smi reports on Jetson (integrated GPU)
if ! [[ "$CC" =~ ^[0-9]+\.[0-9]+$ ]]; then  # Jetson: from the CUDA runtime instead
  echo "compute capability from nvidia-smi is '${CC:-none}': asking the CUDA runtime (torch.cuda.get_device_capability)"
  CC=${TORCH_CC:-}
fi
ARCH=${CC/./}
if [ -z "$ARCH" ]; then
  [ "$DRY" -eq 0 ] && fail "cannot tell this GPU's compute capability (nvidia-smi and torch.cuda both failed)"
  ARCH="<this GPU's, e.g. 90 on H100>"
fi

NVCC=$(command -v nvcc || { [ -x /usr/local/cuda/bin/nvcc ] && echo /usr/local/cuda/bin/nvcc; } || echo "")
CXX_FOUND=$(command -v "${CXX:-c++}" || command -v g++ || command -v clang++ || echo "")
CMAKE=$(command -v cmake || echo "")
HEADERS=""
for dir in ${TENSORRT_ROOT:+"$TENSORRT_ROOT/include"} /usr/include/x86_64-linux-gnu /usr/include/aarch64-linux-gnu \
           /usr/local/TensorRT/include /usr/local/tensorrt/include /opt/tensorrt/include; do
  [ -f "$dir/NvInferVersion.h" ] && { HEADERS=$dir; break; }
done
[ "$PROFILE" = pip-trt ] && HEADERS=""          # pip's tensorrt wheels ship no headers
[ "$PROFILE" = jetpack6 ] && HEADERS=/usr/include/aarch64-linux-gnu  # JetPack's TensorRT debs do

PRESENT=(); MISSING=()
probe() { if [ -n "$2" ]; then PRESENT+=("$1"); else MISSING+=("$1"); fi; }
probe nvidia-smi "$(command -v nvidia-smi || true)"
probe nvcc "$NVCC"; probe cmake "$CMAKE"; probe "C++ compiler" "$CXX_FOUND"; probe "TensorRT headers" "$HEADERS"
MODULES=(torch numpy cupy cuda.bindings pycuda triton tensorrt onnxruntime onnx typer pytest hypothesis)
FOUND=" $("$PYTHON" -c "
import importlib.util, sys
def found(name):
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False
print(' '.join(m for m in sys.argv[1:] if found(m)))" "${MODULES[@]}" 2>/dev/null) "
for module in "${MODULES[@]}"; do probe "$module" "$([[ "$FOUND" == *" $module "* ]] && echo yes)"; done
TORCH_CUDA="${TORCH_VERSION:-none} CUDA ${TORCH_CUDA_VERSION:-none}"
CUDA=$([ -n "$NVCC" ] && "$NVCC" --version 2>/dev/null | sed -n 's/.*release \([0-9.]*\).*/\1/p')
TRT=$("$PYTHON" -c "import tensorrt; print(tensorrt.__version__)" 2>/dev/null || echo "not installed")
[ "$PROFILE" = pip-trt ] && TRT="from pip (simulated)"
QDP=$("$PYTHON" -c "
from eca_deploy.plugin.qdp import qdp_status
ok, why = qdp_status()
print(('yes: ' if ok else 'no: ') + why)" 2>/dev/null || echo "no (cannot ask)")
PYTEST_OK=0
"$PYTHON" -c "import pytest, tests.conftest" >/dev/null 2>&1 && PYTEST_OK=1
DATE=$(date -u +"%Y-%m-%d %H:%M UTC")
echo "preflight: GPU ${GPU:-none} (sm_$ARCH), driver ${DRIVER:-none}, CUDA ${CUDA:-none}, torch $TORCH_CUDA," \
  "TensorRT $TRT (profile $PROFILE)"
echo "preflight: present: ${PRESENT[*]:-nothing}"
echo "preflight: missing: ${MISSING[*]:-nothing}"
[ "$DRY" -eq 1 ] && [ -z "$GPU" ] && echo "preflight: no GPU here (dry run): the steps are chosen as on this machine with one"

# --- which steps can run -------------------------------------------------------------------------------------------
BUILD_WITH=""
if [ -z "$NVCC" ] || [ -z "$CXX_FOUND" ]; then
  skip "build, GPU kernel checks, kernel benchmark" "no nvcc or C++ compiler to build libeca_kernels.so"
elif [ -n "$CMAKE" ]; then
  BUILD_WITH=cmake
else
  BUILD_WITH=nvcc
  echo "no cmake: libeca_kernels.so is built by nvcc alone (no C++ TensorRT plugin)"
fi
PLUGIN_OK=0
if [ "$BUILD_WITH" = cmake ] && [ -n "$HEADERS" ]; then
  PLUGIN_OK=1
elif [ -n "$BUILD_WITH" ]; then
  skip "C++ TensorRT plugin" "$([ -z "$HEADERS" ] && echo "no TensorRT headers (NvInferVersion.h; TensorRT from pip ships none): set TENSORRT_ROOT to an install with include/" || echo "cmake is missing")"
fi
AOT_OK=0
if [ -n "$NVCC" ] || has cuda.bindings.nvrtc; then AOT_OK=1; else
  skip "AOT plugin PTX on the GPU" "neither nvcc nor NVRTC (cuda-python) to compile the PTX"
fi
if [ "$PYTEST_OK" -eq 0 ]; then
  why=$("$PYTHON" -c "import pytest, tests.conftest" 2>&1 | tail -1)
  skip "pytest -m gpu (TensorRT plugin and build tests) and the host execution of the kernels" \
    "pytest or the CLI's dependencies are missing (${why:-import failed})"
fi
[ "$PYTEST_OK" -eq 1 ] && [ -z "$CXX_FOUND" ] && skip "host execution of the kernels" "no C++ compiler"
if [ "$PROFILE" = jetpack6 ] || ! has triton; then
  skip "torch.compile in the kernel benchmark" "Triton is not installed (none on Jetson)"
fi
echo "TensorRT plugin for this machine: $([ "$PLUGIN_OK" -eq 1 ] && echo "the C++ library (headers in $HEADERS)" \
  || echo "no C++ library"); AOT Python plugin: $QDP"

WORK=$([ "$DRY" -eq 1 ] && echo "<tmp>" || mktemp -d)
BUILD=$WORK/build
log() { if [ "$DRY" -eq 1 ]; then echo /dev/null; else echo "$WORK/$1"; fi; }
GPU_STEPS=0
FAILED=()

# emit LINE: append to OUT now (a later timeout loses nothing written before it)
emit() { [ "$DRY" -eq 1 ] || printf '%s\n' "$*" >> "$OUT"; }
# result NAME RC [DETAIL]: one row of the results table, written at once
result() {
  local state
  case "$2" in 0) state=passed ;; 124) state="FAILED (time budget)" ;; *) state="FAILED (exit $2)" ;; esac
  [ "$2" = 0 ] || FAILED+=("$1")
  emit "| $1 | $state${3:+: $3} |"
}

# step NAME RESERVE CMD...: run CMD under `timeout` with what is left of the budget minus RESERVE seconds (kept for
# the steps after it); skipped once nothing is left (`timeout 0` would remove the limit, a negative one exits 125).
step() {
  local name=$1 reserve=$2 limit
  shift 2
  limit=$(( $(left) - reserve ))
  if [ "$limit" -le 0 ]; then
    skip "$name" "the time budget (TIME_LIMIT=${TIME_LIMIT}s) is spent"
    return 200
  fi
  if [ "$DRY" -eq 1 ]; then
    echo "would run: timeout $limit $*" >&3
    return 0
  fi
  echo "running $name (at most ${limit}s)" >&3
  timeout "$limit" "$@"
}
summary() { [ -f "$1" ] && grep -E "[0-9]+ (passed|failed|skipped|error)" "$1" | tail -1; }

if [ "$DRY" -eq 0 ]; then
  mkdir -p "$(dirname "$OUT")"
  {
    echo "# GPU acceptance run"
    echo
    echo "$DATE, \`scripts/gpu_acceptance.sh\` (logs in $WORK)."
    echo
    echo "| | |"
    echo "| --- | --- |"
    echo "| GPU | $GPU (sm_$ARCH) |"
    echo "| driver | $DRIVER |"
    echo "| CUDA (nvcc) | ${CUDA:-none} |"
    echo "| PyTorch | $TORCH_CUDA |"
    echo "| TensorRT | $TRT |"
    echo "| AOT Python plugin | $QDP |"
    echo "| present | ${PRESENT[*]:-nothing} |"
    echo "| missing | ${MISSING[*]:-nothing} |"
    for s in "${SKIPS[@]}"; do echo "| skipped | $s |"; done
  } > "$OUT"
fi

# 1. Build for this architecture only.
if [ -n "$BUILD_WITH" ]; then
  if [ "$BUILD_WITH" = cmake ]; then
    step build 220 "$PYTHON" -c "import sys, pathlib; from eca_deploy.plugin.build import build_plugins as b; \
r = sys.argv[3:]; print(b(pathlib.Path(sys.argv[1]), tensorrt_root=pathlib.Path(r[0]) if r else None, \
cuda_archs=sys.argv[2]))" "$BUILD" "$ARCH" ${TENSORRT_ROOT:+"$TENSORRT_ROOT"} > "$(log build.txt)" 2>&1
  else
    [ "$DRY" -eq 0 ] && mkdir -p "$BUILD"
    step build 220 "$NVCC" -O3 -std=c++17 -shared -Xcompiler -fPIC,-fvisibility=hidden -cudart static \
      "-gencode=arch=compute_$ARCH,code=sm_$ARCH" "-DECA_CUDA_ARCHS=\"$ARCH\"" -Iplugins/kernels \
      plugins/kernels/eca_kernels.cu -o "$BUILD/libeca_kernels.so" > "$(log build.txt)" 2>&1
  fi
  rc=$?
  [ "$rc" = 200 ] || result "build for sm_$ARCH ($BUILD_WITH)" "$rc"
  if [ "$rc" = 0 ] && { [ "$DRY" -eq 1 ] || [ -f "$BUILD/libeca_kernels.so" ]; }; then
    export ECA_DEPLOY_KERNELS="$BUILD"
    [ "$PLUGIN_OK" -eq 1 ] && [ "$DRY" -eq 0 ] && [ ! -f "$BUILD/libeca_trt_plugin.so" ] && PLUGIN_OK=0
    [ "$PLUGIN_OK" -eq 1 ] && export ECA_DEPLOY_PLUGIN="$BUILD"
    [ "$DRY" -eq 1 ] && echo "would export: ECA_DEPLOY_KERNELS=$BUILD${ECA_DEPLOY_PLUGIN:+ ECA_DEPLOY_PLUGIN=$BUILD}"
  else
    BUILD_WITH=""
    [ "$rc" = 200 ] || skip "GPU kernel checks, kernel benchmark" "the build failed (see $(log build.txt))"
  fi
fi

# 2. The kernels against the float64 reference (no pytest needed).
if [ -n "$BUILD_WITH" ]; then
  step "GPU kernel checks" 150 "$PYTHON" -m tests.kernels_gpu_checks --only kernels --kernels "$BUILD" \
    > "$(log kernel_checks.txt)" 2>&1
  rc=$?
  [ "$rc" = 200 ] || { GPU_STEPS=$((GPU_STEPS + 1)); result "GPU kernel checks" "$rc" "$(summary "$(log kernel_checks.txt)")"; }
fi

# 3. The AOT plugin's PTX, launched with the plugin's grid, block and arguments.
if [ "$AOT_OK" -eq 1 ]; then
  step "AOT plugin PTX on the GPU" 130 "$PYTHON" -m tests.kernels_gpu_checks --only aot > "$(log aot_checks.txt)" 2>&1
  rc=$?
  [ "$rc" = 200 ] || { GPU_STEPS=$((GPU_STEPS + 1)); result "AOT plugin PTX on the GPU" "$rc" "$(summary "$(log aot_checks.txt)")"; }
fi

# 4. The kernel benchmark, its rows appended to OUT as they are measured.
if [ -n "$BUILD_WITH" ]; then
  emit ""
  emit "## Kernel benchmark"
  emit ""
  emit "\`python scripts/bench_eca_kernels.py --kernels BUILD $BENCH\`: microseconds per call from CUDA graph replays"
  emit "(median over interleaved rounds in rotated order, ± half the spread), buffers rotated past 2 x L2, GB/s of the"
  emit "minimum traffic."
  emit ""
  # shellcheck disable=SC2086
  step "kernel benchmark" "$([ "$PYTEST_OK" -eq 1 ] && echo 60 || echo 5)" "$PYTHON" scripts/bench_eca_kernels.py \
    --kernels "$BUILD" $BENCH >> "$([ "$DRY" -eq 1 ] && echo /dev/null || echo "$OUT")" 2> "$(log bench.err)"
  rc=$?
  if [ "$rc" != 200 ]; then
    GPU_STEPS=$((GPU_STEPS + 1))
    [ "$rc" = 0 ] || { FAILED+=("kernel benchmark"); emit ""; emit "kernel benchmark: FAILED (exit $rc); its stderr ends:"; emit '```'; emit "$(tail -20 "$(log bench.err)" 2>/dev/null)"; emit '```'; }
  fi
fi

# 5. pytest: the other GPU tests, then the host execution of the kernels.
if [ "$PYTEST_OK" -eq 1 ]; then
  emit ""
  emit "| step | result |"
  emit "| --- | --- |"
  PYTEST=(-m pytest -q -p no:cacheprovider -m gpu -rs --ignore=tests/test_kernels_gpu.py)
  [ "$PLUGIN_OK" -eq 1 ] || PYTEST+=(--ignore=tests/test_plugin_tensorrt.py)
  step "pytest -m gpu" 45 "$PYTHON" "${PYTEST[@]}" tests > "$(log tests.txt)" 2>&1
  rc=$?
  [ "$rc" = 200 ] || { GPU_STEPS=$((GPU_STEPS + 1)); result "pytest -m gpu" "$rc" "$(summary "$(log tests.txt)")"; }
  if [ -n "$CXX_FOUND" ]; then
    step "host execution of the kernels" 0 "$PYTHON" -m pytest -q -p no:cacheprovider tests/test_kernels_host.py \
      > "$(log host.txt)" 2>&1
    rc=$?
    [ "$rc" = 200 ] || result "host execution of the kernels (CPU)" "$rc" "$(summary "$(log host.txt)")"
  fi
fi

if [ "$DRY" -eq 1 ]; then
  echo "would write: $OUT"
  echo "dry run: nothing was run or written"
  exit 0
fi
emit ""
emit "Finished in $(( $(date +%s) - START )) s; ${#FAILED[@]} failed step(s)${FAILED[*]:+: ${FAILED[*]}}."
for s in "${SKIPS[@]}"; do emit "- skipped $s"; done
echo "wrote $OUT (logs in $WORK)"
if [ "$GPU_STEPS" -eq 0 ]; then
  echo "error: no GPU step ran (${SKIPS[*]:-see the preflight}): nothing was tested on the GPU" >&2
  exit 3
fi
[ "${#FAILED[@]}" -eq 0 ]
