# The base of the images that run torch (encoder, llm, llm-vllm, generators): Python 3.11 and the torch we test
# (the Makefile's TORCH_SPEC, CPU build there) as its CUDA build. PyPI's Linux wheel of torch 2.13.0 is the
# CUDA 13.0 build and brings the CUDA 13.0 runtime, cuDNN and NCCL as wheels, so no CUDA base image is needed,
# only an NVIDIA driver of the 580 series or newer on the node. The vLLM variant (services/llm/Dockerfile) and
# vllm 0.32.0's own requirement pin this same torch. On top, as in docker/cpu.Dockerfile: the contracts and the
# runtime from the shared build stage, the UID 10001 user, and what every model service shares (/models, the full
# profile, the metrics port). `make images` (scripts/images.py) builds it after the build stage, as
# localhost/modaverse/gpu-base:<tag>, and passes it to the service Dockerfiles as GPU_BASE; it is never pushed.
# Versions and their reasons: docs/deploy.md, "Images".
ARG BUILD_IMAGE

FROM ${BUILD_IMAGE} AS build

FROM python:3.11-slim-trixie
ARG TORCH_VERSION=2.13.0
ARG CUDA_VERSION=13.0
# Every later pip install in an image built on this one keeps this torch: a package asking for another fails the
# build instead of replacing it.
ENV PYTHONUNBUFFERED=1 PIP_CONSTRAINT=/etc/modaverse/constraints.txt
RUN mkdir -p /etc/modaverse \
 && echo "torch==${TORCH_VERSION}" > /etc/modaverse/constraints.txt \
 && pip install --no-cache-dir "torch==${TORCH_VERSION}" \
 && python -c "import sys, torch; sys.exit(None if torch.version.cuda == sys.argv[1] else f'torch {torch.__version__} is built for CUDA {torch.version.cuda}, not {sys.argv[1]}')" "${CUDA_VERSION}"
# After torch, so that a change to our code leaves the torch layer cached.
COPY --from=build /wheels/modaverse_protos-*.whl /wheels/modaverse_runtime-*.whl /wheels/
RUN pip install --no-cache-dir /wheels/*.whl \
 && rm -rf /wheels \
 && useradd --uid 10001 --create-home modaverse \
 && mkdir -p /models && chown modaverse /models
# MODAVERSE_METRICS_PORT: the chart's global.metricsPort, the same for every service.
ENV MODAVERSE_PROFILE=full MODAVERSE_MODEL_DIR=/models MODAVERSE_METRICS_PORT=9090
VOLUME ["/models"]
EXPOSE 9090
