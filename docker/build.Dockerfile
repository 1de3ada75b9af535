# The shared build stage of every image: the wheels of every package of the repository, in /wheels: the contracts
# (modaverse-protos, whose stubs are generated while its wheel is built), the runtime, the SDK and each service. The
# shared bases (docker/cpu.Dockerfile, docker/gpu.Dockerfile) install the contracts and the runtime from it, each
# service's Dockerfile its own wheel; none builds a wheel itself. `make images` (scripts/images.py) builds it first,
# as localhost/modaverse/build:<tag>, and passes it on as the build-arg BUILD_IMAGE; it is never pushed.
# Versions: docs/deploy.md, "Images".
FROM python:3.11-slim-trixie
WORKDIR /src
COPY protos/ protos/
COPY runtime/ runtime/
COPY sdk/ sdk/
# The SDK's wheel depends on modaverse-protos by version (the wheel beside it), not by path (sdk/setup.py).
ENV MODAVERSE_SDK_PROTOS_PIN=1
RUN pip wheel --no-cache-dir --no-deps -w /wheels ./protos ./runtime ./sdk
# The services after the shared packages, so that editing a service leaves the layer above cached.
COPY services/ services/
RUN pip wheel --no-cache-dir --no-deps -w /wheels ./services/encoder ./services/gateway ./services/generators \
      ./services/llm ./services/web
