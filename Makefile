# ModaVerse Serve: one virtualenv (.venv) with every package installed editable.
#   make install   create .venv and install everything (torch CPU build first)
#   make demo      the README's run command: tiny models, real servers, a real answer
#   make test      the README's test command (lint + the whole suite; what CI runs)
#   make dist      wheels + sdists of the contracts and the SDK (what applications install) into dist/
#   make images    the container images the Helm chart pulls, named as it names them (make push: push them)
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
# The CPU build on this machine's disk; GPU images bring their own torch.
TORCH_SPEC ?= torch==2.13.0
export HF_HUB_OFFLINE := 1
export PYTHONUNBUFFERED := 1
# The SDK depends on modaverse-protos by version, not on the protos folder by path (sdk/setup.py): the
# editable install brings `-e protos` itself, and wheels from `make dist` must not name a local path.
export MODAVERSE_SDK_PROTOS_PIN := 1

PROTO_SRC := $(wildcard protos/modaverse_protos/*/v1/*.proto)
PROTO_STAMP := protos/modaverse_protos/.generated
INSTALL_STAMP := $(VENV)/.installed
PACKAGES := protos/pyproject.toml runtime/pyproject.toml sdk/pyproject.toml $(wildcard services/*/pyproject.toml)

.PHONY: install protos dist models samples demo lint format test test-unit test-gpu bench clean

install: $(INSTALL_STAMP)

$(INSTALL_STAMP): $(PACKAGES) requirements-dev.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first: anything that depends on it would otherwise pull a multi-GB CUDA build.
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -r requirements-dev.txt
	# ImageBind's declared deps pull CUDA torch, torchvision, torchaudio: install the code only.
	$(PY) -m pip install -q --no-deps imagebind-unofficial==0.1.1
	$(PY) -m pip install -q -e protos -e "runtime[media]" -e "sdk[cluster,eval]" -e services/encoder -e services/llm -e services/generators -e services/gateway -e services/web -e training
	@touch $@

protos: $(PROTO_STAMP)

$(PROTO_STAMP): $(PROTO_SRC) $(INSTALL_STAMP)
	cd protos && ../$(PY) -m grpc_tools.protoc -I . \
	  --python_out=. --grpc_python_out=. --mypy_out=. --mypy_grpc_out=. \
	  --plugin=protoc-gen-mypy=../$(BIN)/protoc-gen-mypy --plugin=protoc-gen-mypy_grpc=../$(BIN)/protoc-gen-mypy_grpc \
	  $(patsubst protos/%,%,$(PROTO_SRC))
	@touch $@

# The contracts and the SDK, versioned together (the contracts' version is the API version). Each build
# is isolated: an sdist, then the wheel from it; the protos wheel generates its stubs while it is built.
dist: $(INSTALL_STAMP)
	rm -rf dist
	$(PY) -m build --outdir dist protos
	$(PY) -m build --outdir dist sdk
	@ls -1 dist

models: protos
	$(BIN)/modaverse-encoder build-tiny
	$(BIN)/modaverse-llm build-tiny
	$(BIN)/modaverse-generator build-tiny

# First run: trains the tiny model on the shapes world (~12 min on 2 cores, cached afterwards).
demo: protos tiny-model
	$(PY) scripts/demo.py

lint: protos
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy protos/modaverse_protos runtime/src services/encoder/src services/llm/src services/generators/src services/gateway/src services/web/src training/src sdk/src tests bench scripts examples helm/gen_schema.py eval

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

test: lint
	$(BIN)/pytest tests --ignore=tests/gpu -q

test-unit: protos
	$(BIN)/pytest tests/unit -q

# On a CUDA machine (see tests/gpu/README.md).
test-gpu: protos
	$(BIN)/pytest tests/gpu -v -rs

bench: protos
	$(PY) bench/encoder.py
	$(PY) bench/codec.py
	$(PY) bench/llm.py
	$(PY) bench/generators.py --kinds text-to-image
	$(PY) bench/gateway.py

# Per-service extra targets (e.g. services/llm/service.mk: the vLLM virtualenv and its tests).
-include services/*/service.mk
# The chart's tools (helm binary, schema validators) and its tests (helm/helm.mk).
-include helm/helm.mk
# Training targets (training/training.mk: train-tiny).
-include training/training.mk
# Container images (docker/images.mk: images, push, images-list, test-images).
-include docker/images.mk
# Evaluation (eval/eval.mk: eval-tiny, eval-media; docs/eval.md).
-include eval/eval.mk

clean:
	rm -rf $(VENV) .tools dist $(PROTO_STAMP) protos/modaverse_protos/*/v1/*_pb2*.py* .mypy_cache .ruff_cache .pytest_cache
