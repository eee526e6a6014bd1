#!/usr/bin/env bash
# The GPU checks, for a first look at a new GPU node: under 6 minutes on one GPU by construction (each step has
# its own time limit; the limits add up to 340 s), the critical checks first, every result on disk as soon as
# its step ends.
#   1. critical (90 s): tests/test_devices.py without compile and Inception: resume on CUDA equals the
#      uninterrupted run, DDIM on CUDA gives the CPU's images, a bf16 + TF32 + channels-last + fused AdamW
#      training run follows fp32, InputWait on CUDA;
#   2. real shapes (100 s): one real-shape training step of each Study A/B model (UNet 128², DiT, UNet 64² at
#      widths 64/96/128) in fp32 and in the full presets' bf16 + TF32: s/step, images/s, peak CUDA memory;
#   3. torch.compile (50 s), timed on its own: the lever test with compile;
#   4. peers and MFU (50 s): Study A's UNet against diffusers' UNet2DModel, DiT-B/2 (peers where diffusers is there);
#   5. input pipeline (25 s): bench_loader.py with GPU idle time;
#   6. Inception on CUDA equals the CPU (25 s).
# Dry run on a CPU (GPU_CHECK_DEVICE=cpu): the same steps at --quick sizes, so that the script cannot rot
# (tests/test_bench.py runs it).
#
# Peers: the machine may have no package index. Put the diffusers wheel in .whl/ first (git-ignored) and bring it:
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: -d .whl diffusers==0.42.1
# Without it, the peer rows are skipped with a note and the other figures still come.
#
# Output under $OUT (default bench/gpu-out): gpu_check.log (everything printed, versions and nvidia-smi first),
# steps.tsv (one line per finished step: name, exit status, seconds, limit), critical.xml and compile.xml (JUnit),
# results-models-gpu-shapes.json, results-models-gpu-targets.json, results-loader-gpu.json. Record the figures in
# bench/RESULTS.md with the device, versions and date.
set -uo pipefail
out=${OUT:-bench/gpu-out}
device=${GPU_CHECK_DEVICE:-cuda}
case "$device" in cuda | cpu) ;; *) echo "GPU_CHECK_DEVICE must be cuda or cpu, got '$device'" >&2; exit 2 ;; esac
mkdir -p "$out"
exec > >(tee "$out/gpu_check.log") 2>&1
export PYTHONUNBUFFERED=1 TORCHINDUCTOR_CACHE_DIR=/tmp/inductor-cache
py=${PYTHON:-python3}
if compgen -G ".whl/*.whl" >/dev/null; then
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl &&
        export PYTHONPATH=/tmp/site
fi
quick=() loader=() scale=1
if [ "$device" = cpu ]; then # the dry run: tiny sizes, the same steps, 10x the limits (a shared CPU, not a GPU)
    scale=10
    quick=(--quick --wait-quiet 0 --threads 2)
    loader=(--images 256 --size 16 --batch 16 --batches 4 --train-images 512 --train-batch 8 --steps 2 --rounds 1)
fi
printf 'step\texit\tseconds\tlimit\n' >"$out/steps.tsv"
date -u
[ "$device" = cuda ] && { nvidia-smi || true; }
"$py" - <<'PY'
import platform, torch
print(f"python {platform.python_version()}, torch {torch.__version__} (CUDA {torch.version.cuda}), "
      f"device {torch.cuda.get_device_name() if torch.cuda.is_available() else 'none'}")
try:
    import diffusers
    print(f"diffusers {diffusers.__version__}")
except ImportError:
    print("diffusers absent: peer rows will be skipped")
PY

step() { # step <seconds> <name> <command...>: run it under its limit and record the outcome at once
    local limit=$(($1 * scale)) name=$2 rc t0=$SECONDS
    shift 2
    echo "=== $name (limit ${limit}s) ==="
    timeout "$limit" "$@"
    rc=$?
    echo "=== $name: exit $rc after $((SECONDS - t0))s ==="
    printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$((SECONDS - t0))" "$limit" >>"$out/steps.tsv"
}

step 90 "critical: resume, sampler parity, bf16 step on $device" "$py" -m pytest -q -p no:cacheprovider \
    tests/test_devices.py -k "not compile and not inception" --junitxml "$out/critical.xml"
step 100 "real shapes: one step of each Study A/B model, fp32 and bf16" "$py" bench/bench_models.py \
    --device "$device" --models unet-a,dit-ref12,dit-b2,unet-b64,unet-b96,unet-b128 --study-b-dims 64,96,128 \
    --parts train --levers preset --no-peers "${quick[@]}" --out "$out/results-models-gpu-shapes.json"
step 50 "torch.compile, timed apart" "$py" -m pytest -q -p no:cacheprovider tests/test_devices.py -k "compile" \
    --junitxml "$out/compile.xml"
step 50 "peers and MFU: Study A UNet vs UNet2DModel, DiT-B/2" "$py" bench/bench_models.py --device "$device" \
    --models unet-a,dit-b2 --parts train --levers preset "${quick[@]}" --out "$out/results-models-gpu-targets.json"
step 25 "input pipeline" "$py" bench/bench_loader.py --device "$device" --steps 10 --rounds 3 "${loader[@]}" \
    --out "$out/results-loader-gpu.json"
step 25 "Inception on $device equals the CPU" "$py" -m pytest -q -p no:cacheprovider tests/test_devices.py \
    -k "inception"
date -u
awk -F'\t' 'NR > 1 && $2 != 0 {bad++} END {printf "%d of %d steps failed or ran out of time\n", bad, NR - 1}' \
    "$out/steps.tsv"
