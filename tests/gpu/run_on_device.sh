#!/usr/bin/env bash
# Runs tests/gpu and the GPU benchmarks on a bare CUDA machine with no network, where the
# missing wheels were carried in .whl/ (see tests/gpu/README.md). Writes logs to $OUT.
set -uo pipefail
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT" /tmp/bin
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/protos:$PWD/runtime/src:$PWD/services/encoder/src:$PWD/services/llm/src:$PWD/services/generators/src:$PWD/services/gateway/src:$PWD/sdk/src:$PWD
export PATH=/tmp/bin:$PATH HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
printf '#!/bin/sh\nexec python3 -m modaverse_encoder "$@"\n' > /tmp/bin/modaverse-encoder && chmod +x /tmp/bin/modaverse-encoder
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, grpc; print('torch', torch.__version__, 'grpc', grpc.__version__)" | tee -a "$OUT/gpu.txt"
ART=/tmp/huge
[ -d $ART/adaptor ] || { time modaverse-encoder build-random --out $ART --device cuda; } 2>&1 | tail -3
MODAVERSE_GPU_ARTIFACTS=$ART python3 -m pytest ${GPU_TESTS:-tests/gpu} -v -rs -s -p no:cacheprovider 2>&1 | tee "$OUT/gpu_tests.log" | tail -40
[ -n "${SKIP_BENCH:-}" ] && exit 0
export MODAVERSE_PROFILE=full MODAVERSE_IMAGEBIND_CHECKPOINT=$ART/imagebind/imagebind.pth MODAVERSE_ADAPTOR_PATH=$ART/adaptor
for kind in ${BENCH_KINDS:-image audio}; do
  python3 bench/encoder.py --kind "$kind" --seconds "${BENCH_SECONDS:-6}" --concurrency 1 8 32 2>&1 | tail -7 | tee -a "$OUT/bench_encoder_gpu.txt"
done
python3 bench/codec.py 2>&1 | tail -8 | tee "$OUT/bench_codec_gpu.txt"
