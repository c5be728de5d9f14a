#!/usr/bin/env bash
# The one script to run on a GPU machine: GPU tests, then the GPU-vs-CPU benchmark.
#
#   OUT=/some/dir bash benchmarks/gpu_device_check.sh
#
# Installs nothing (the GPU machine has no network): it needs CuPy, nvcc/NVRTC, numpy,
# pytest and hypothesis, which its image carries; hefl is used from this checkout
# (PYTHONPATH), the C extension and gmpy2 are optional (the tests' oracle and the
# benchmark's CPU baseline fall back to Python integers and say so in their output).
# Writes at most 8 files (the device tool brings back 8), flat, into $OUT:
#   device.txt        nvidia-smi, hefl.gpu.device_info(), versions; at the end, the exit
#                     codes of the steps and any extension build errors
#   warmup.log        hefl gpu warmup: first (cold) compile of the 2048-bit kernels, then a
#                     second process loading them from CuPy's on-disk cache
#   gpu_tests.log     pytest tests/gpu -m gpu (every GPU result against an integer oracle)
#   bench.log         benchmark output (table, tuning of lanes per number, targets)
#   gpu_vs_cpu.json   the benchmark record (one JSON line)
#   gpu_vs_cpu.png    the plot (skipped with a message where matplotlib is missing)
#   sb.log, sb.jsonl  SecureBoost at HEFL_GPU_CHECK_SB_ROWS rows (default 100000; 0 skips),
#                     GPU backend, CPU backend, then the GPU compressing as the CPU does
#                     (--compress-slots max); kernels already in the cache
#   job.log           (step "job") hefl run configs/gpu.yaml: the YAML job on the GPU; needs
#                     pydantic, cryptography (and cffi, pycparser) carried in .whl/
#   lr.log, lr.jsonl  (step "lr") hetero LR benchmark, Paillier, GPU backend then CPU
# Steps in this order: warm-up, GPU tests, SecureBoost, kernel benchmark, job, hetero LR.
# HEFL_GPU_CHECK_STEPS picks them (default "tests sb bench"; the warm-up always runs).
# The default steps took 159 s on an H200 (2026-11-27), one device call; caps bound them:
# override with HEFL_GPU_CHECK_MAX_SIZE, HEFL_GPU_CHECK_BUDGET_S, HEFL_GPU_CHECK_TEST_TIMEOUT,
# HEFL_GPU_CHECK_BENCH_TIMEOUT, HEFL_GPU_CHECK_SB_TIMEOUT, HEFL_GPU_CHECK_JOB_TIMEOUT,
# HEFL_GPU_CHECK_LR_TIMEOUT; HEFL_GPU_CHECK_WARM_KEYS (default 2048; e.g. "2048 3072"),
# HEFL_GPU_CHECK_SB_RUNS (default "gpu:auto cpu:auto gpu:max", backend:compress-slots).
# If gmpy2 wheels were carried in .whl/ (see /work/.library/device/README.md), they are
# installed into /tmp/site first, so that the CPU baseline uses GMP.
set -u -o pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu_check_out}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
export CUPY_CACHE_DIR=${CUPY_CACHE_DIR:-/tmp/hefl_cupy_cache}
MAX_SIZE=${HEFL_GPU_CHECK_MAX_SIZE:-1000000}
BUDGET=${HEFL_GPU_CHECK_BUDGET_S:-75}
TEST_TIMEOUT=${HEFL_GPU_CHECK_TEST_TIMEOUT:-100}
BENCH_TIMEOUT=${HEFL_GPU_CHECK_BENCH_TIMEOUT:-170}
PY=${PYTHON:-python3}

if ls .whl/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl && export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi

# Best effort: build hefl's GMP C extensions in place against the GMP that the gmpy2 wheel
# bundles (headers in gmpy2/, library in gmpy2.libs/), so the CPU baseline uses the same
# native kernels as on the dev machine.  Without them the CPU side falls back to gmpy2.
if [ -d /tmp/site/gmpy2 ] && command -v gcc >/dev/null; then
  inc=$($PY -c "import sysconfig; print(sysconfig.get_paths()['include'])")
  suf=$($PY -c "import sysconfig; print(sysconfig.get_config_var('EXT_SUFFIX'))")
  lib=$(ls /tmp/site/gmpy2.libs/libgmp*.so* 2>/dev/null | head -1)
  for m in _native _mont; do
    gcc -O3 -shared -fPIC -I"$inc" -I/tmp/site/gmpy2 "hefl/native/$m.c" "$lib" \
      -Wl,-rpath,/tmp/site/gmpy2.libs -o "hefl/$m$suf" 2>>"$OUT/build.err" \
      && echo "built hefl.$m" || echo "could not build hefl.$m (CPU baseline uses gmpy2)"
  done
fi

{
  date -u
  nvidia-smi 2>&1 | head -20
  $PY - <<'EOF'
import json, platform
import hefl.gpu as g
print(json.dumps(g.device_info(), indent=1))
print("python", platform.python_version())
for mod in ("numpy", "cupy", "gmpy2", "matplotlib", "hypothesis"):
    try:
        m = __import__(mod)
        print(mod, getattr(m, "__version__", "?"))
    except Exception as exc:  # noqa: BLE001
        print(mod, "MISSING", type(exc).__name__)
EOF
} >"$OUT/device.txt" 2>&1
echo "device info: $(grep -m1 '"name"' "$OUT/device.txt")"
if ! $PY -c "import gmpy2" 2>/dev/null; then
  echo "WARNING: gmpy2 is missing here, and hefl.he imports it: carry its wheel in .whl/"
  echo "  (on the dev machine: python3 -m pip download --no-deps --only-binary=:all: \\"
  echo "   --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 \\"
  echo "   --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl gmpy2;"
  echo "   then run with carry=['.whl'])"
fi

# the first compile on this machine (cold), then what a second process pays (cache)
: >"$OUT/warmup.log"; rc_warm=""
for pass in cold "cached (new process)"; do
  echo "== $pass" | tee -a "$OUT/warmup.log"
  $PY -m hefl gpu warmup --key-size ${HEFL_GPU_CHECK_WARM_KEYS:-2048} 2>&1 | tee -a "$OUT/warmup.log"
  rc_warm="$rc_warm${pass%% *}:$? "
done

STEPS=" ${HEFL_GPU_CHECK_STEPS:-tests sb bench} "
step() { case "$STEPS" in *" $1 "*) return 0;; *) return 1;; esac; }

rc_tests=0; rc_bench=0; rc_job=""; rc_lr=""
if step tests; then
timeout "$TEST_TIMEOUT" $PY -m pytest tests/gpu -m gpu -q -rA -p no:cacheprovider \
  --durations=8 2>&1 | tee "$OUT/gpu_tests.log"
rc_tests=$?
fi

# SecureBoost before the kernel benchmark: if the call's time runs out, the end-to-end
# figures (the 10x target) are already in
rc_sb=""
SB_ROWS=${HEFL_GPU_CHECK_SB_ROWS:-100000}
if step sb && [ "$SB_ROWS" != 0 ]; then
  # SecureBoost benchmark workload at HEFL_GPU_CHECK_SB_ROWS rows, GPU backend then CPU backend
  : >"$OUT/sb.jsonl"
  # the GPU with its own compression choice, the CPU, then the GPU packing as many values
  # per ciphertext as fit (the CPU's choice) for comparison
  for run in ${HEFL_GPU_CHECK_SB_RUNS:-gpu:auto cpu:auto gpu:max}; do
    be=${run%%:*}; slots=${run#*:}
    timeout "${HEFL_GPU_CHECK_SB_TIMEOUT:-150}" $PY benchmarks/secureboost_bench.py --rows "$SB_ROWS" \
      --trees "${HEFL_GPU_CHECK_SB_TREES:-10}" --backend $be --compress-slots $slots \
      --transport "${HEFL_GPU_CHECK_SB_TRANSPORT:-processes}" --out "$OUT/sb_$be.tmp" 2>&1 | tee -a "$OUT/sb.log"
    rc_sb="$rc_sb$run:$? "
    cat "$OUT/sb_$be.tmp" >>"$OUT/sb.jsonl" 2>/dev/null; rm -f "$OUT/sb_$be.tmp"
  done
fi

if step bench; then
timeout "$BENCH_TIMEOUT" $PY benchmarks/gpu_vs_cpu.py --tune --max-size "$MAX_SIZE" --budget-s "$BUDGET" \
  --cpu-cap 1000 --cpu-cap-pow 200 --gpu-cap-decrypt 200000 --gpu-cap-pow 30000 \
  --out "$OUT/gpu_vs_cpu.json" --plot "$OUT/gpu_vs_cpu.png" 2>&1 | tee "$OUT/bench.log"
rc_bench=$?
fi

if step job; then
  timeout "${HEFL_GPU_CHECK_JOB_TIMEOUT:-150}" $PY -m hefl run configs/gpu.yaml --output /tmp/hefl_gpu_job \
    2>&1 | tee "$OUT/job.log"
  rc_job=$?
fi

if step lr; then
  : >"$OUT/lr.jsonl"
  for be in gpu cpu; do
    timeout "${HEFL_GPU_CHECK_LR_TIMEOUT:-120}" $PY benchmarks/hetero_lr_bench.py --he paillier --backend $be \
      --out "$OUT/lr_$be.tmp" 2>&1 | tee -a "$OUT/lr.log"
    rc_lr="$rc_lr$be:$? "
    cat "$OUT/lr_$be.tmp" >>"$OUT/lr.jsonl" 2>/dev/null; rm -f "$OUT/lr_$be.tmp"
  done
fi

{ cat "$OUT/build.err" 2>/dev/null; rm -f "$OUT/build.err"
  echo "warmup rc=$rc_warm tests rc=$rc_tests bench rc=$rc_bench secureboost rc=${rc_sb:-skipped}" \
    "job rc=${rc_job:-skipped} lr rc=${rc_lr:-skipped}"; } | tee -a "$OUT/device.txt"
grep -E "passed|failed|error" "$OUT/gpu_tests.log" 2>/dev/null | tail -3
# every step that ran exited 0 (the lists read "name:rc name:rc ")
! echo " $rc_warm $rc_sb $rc_lr " | grep -qE ':[1-9][0-9]* ' && [ "${rc_job:-0}" -eq 0 ] \
  && [ "$rc_tests" -eq 0 ] && [ "$rc_bench" -eq 0 ]
