# Container images, included by the root Makefile. Names and the version come from the chart (helm/modaverse:
# every values file's image.repository, Chart.yaml's appVersion); scripts/images.py does the work with whichever of
# docker, podman or buildah is on PATH (standard-library Python only: no virtualenv needed).
#   make images [REGISTRY=registry.example.com/team] [TAG=0.1.0] [BUILDER=podman] [ONLY="gateway web"]
#                       the shared stages (docker/*.Dockerfile), then every image the chart names
#   make push   [same]  push those images (build them first)
#   make images-list    what `make images` would build, as tags, Dockerfiles and targets
#   make test-images    tests/images: hadolint, the Dockerfiles against the chart, scripts/images.py with a fake builder
IMAGES_ARGS = $(if $(REGISTRY),--registry "$(REGISTRY)") $(if $(TAG),--tag "$(TAG)") \
  $(if $(BUILDER),--builder "$(BUILDER)") $(foreach image,$(ONLY),--only "$(image)")

.PHONY: images push images-list test-images

images:
	@$(PYTHON) scripts/images.py build $(IMAGES_ARGS)

push:
	@$(PYTHON) scripts/images.py push $(IMAGES_ARGS)

images-list:
	@$(PYTHON) scripts/images.py list $(IMAGES_ARGS)

test-images: protos helm-tools
	$(BIN)/pytest tests/images -q
