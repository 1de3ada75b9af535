# The base of the images that run no torch (gateway, web): slim Python with the contracts (modaverse-protos) and the
# runtime installed from the shared build stage, the UID 10001 user the chart runs as, and the metrics port every
# service serves, so that a service's Dockerfile adds only its own wheel and metadata. `make images`
# (scripts/images.py) builds it after the build stage, as localhost/modaverse/cpu-base:<tag>, and passes it to the
# service Dockerfiles as CPU_BASE; it is never pushed. Versions: docs/deploy.md, "Images".
ARG BUILD_IMAGE

FROM ${BUILD_IMAGE} AS build

FROM python:3.11-slim-trixie
# MODAVERSE_METRICS_PORT: the chart's global.metricsPort, the same for every service.
ENV PYTHONUNBUFFERED=1 MODAVERSE_METRICS_PORT=9090
COPY --from=build /wheels/modaverse_protos-*.whl /wheels/modaverse_runtime-*.whl /wheels/
# Wheels are named by path, so pip never looks for ours on an index.
RUN pip install --no-cache-dir /wheels/*.whl \
 && rm -rf /wheels \
 && useradd --uid 10001 --no-create-home modaverse
EXPOSE 9090
