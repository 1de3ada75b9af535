# The shared build stage of every image: wheels of the contracts (modaverse-protos, whose stubs are generated
# while its wheel is built), the runtime and the SDK, in /wheels. Each service's Dockerfile starts its own build
# stage FROM this image (build-arg BUILD_IMAGE) and adds its wheel beside them. `make images` (scripts/images.py)
# builds it first, as localhost/modaverse/build:<tag>; it is never pushed. Versions: docs/deploy.md, "Images".
FROM python:3.11-slim-trixie
WORKDIR /src
COPY protos/ protos/
COPY runtime/ runtime/
COPY sdk/ sdk/
# The SDK's wheel depends on modaverse-protos by version (the wheel beside it), not by path (sdk/setup.py).
ENV MODAVERSE_SDK_PROTOS_PIN=1
RUN pip wheel --no-cache-dir --no-deps -w /wheels ./protos ./runtime ./sdk
