#!/usr/bin/env bash
# The GPU checks of issue 7 in one call on a GPU machine (about 8 minutes; each step has its own time limit, so
# the most important results come back even if a later one runs long):
#   1. tests/test_devices.py: CUDA sampling = CPU sampling, training with every lever (bf16, TF32,
#      channels-last, fused AdamW, torch.compile), resume on CUDA, InputWait on CUDA;
#   2. the issue's targets: Study A's UNet against diffusers' UNet2DModel and DiT-B/2's MFU in bf16;
#   3. the input pipeline with GPU idle time (bench_loader.py --device cuda);
#   4. the rest of the model suite (Study B widths, demo sizes, the reference DiT, sampling, Inception).
#
# Peers: the machine may have no package index. Put the diffusers wheel in .whl/ first (git-ignored) and bring it:
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: -d .whl diffusers==0.42.1
# Without it, the peer rows are skipped with a note and the MFU figures still come.
#
# Output under $OUT (default bench/gpu-out): gpu_check.log (everything printed, versions and nvidia-smi first),
# results-models-gpu-targets.json, results-loader-gpu.json, results-models-gpu.json. Record the figures in
# bench/RESULTS.md with the device, versions and date.
set -uo pipefail
out=${OUT:-bench/gpu-out}
mkdir -p "$out"
exec > >(tee "$out/gpu_check.log") 2>&1
export PYTHONUNBUFFERED=1 TORCHINDUCTOR_CACHE_DIR=/tmp/inductor-cache
py=${PYTHON:-python3}
if compgen -G ".whl/*.whl" >/dev/null; then
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl &&
        export PYTHONPATH=/tmp/site
fi
date -u
nvidia-smi || true
"$py" - <<'EOF'
import platform, torch
print(f"python {platform.python_version()}, torch {torch.__version__} (CUDA {torch.version.cuda}), "
      f"device {torch.cuda.get_device_name() if torch.cuda.is_available() else 'none'}")
try:
    import diffusers
    print(f"diffusers {diffusers.__version__}")
except ImportError:
    print("diffusers absent: peer rows will be skipped")
EOF

step() {  # step <seconds> <name> <command...>
    local limit=$1 name=$2
    shift 2
    echo "=== $name (limit ${limit}s) ==="
    local t0=$SECONDS
    timeout "$limit" "$@"
    echo "=== $name: exit $? after $((SECONDS - t0))s ==="
}

step 150 "CUDA tests" "$py" -m pytest -q -p no:cacheprovider tests/test_devices.py
step 200 "targets: Study A UNet vs UNet2DModel, DiT-B/2 MFU" "$py" bench/bench_models.py --device cuda \
    --models unet-a,dit-b2 --parts train --out "$out/results-models-gpu-targets.json"
step 60 "input pipeline" "$py" bench/bench_loader.py --device cuda --steps 10 --rounds 3 \
    --out "$out/results-loader-gpu.json"
step 120 "rest of the suite" "$py" bench/bench_models.py --device cuda --models unet-b64,unet-b96,unet-b128,unet-demo,dit-ref12,dit-demo \
    --study-b-dims 64,96,128 --out "$out/results-models-gpu.json"
date -u
