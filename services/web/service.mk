# Web front door extras, included by the root Makefile.
#   make web-browser   headless Chromium and its driver (Debian: chromium, chromium-driver) for the
#                      playground's browser tests (tests/web/test_playground.py); they skip, saying why,
#                      only where neither is installed nor can be (no apt-get, not root and no sudo)
#   make test-web      the web front door's tests: unit, then the real tiny stack with the openai
#                      package and the browser
#   make web           serve it on :8080 in front of a gateway on localhost:50050
CHROMIUM := /usr/bin/chromium
CHROMEDRIVER := /usr/bin/chromedriver

.PHONY: web-browser test-web web

web-browser:
	@if [ -x $(CHROMIUM) ] && [ -x $(CHROMEDRIVER) ]; then exit 0; fi; \
	if ! command -v apt-get >/dev/null; then \
	  echo "web-browser: no apt-get here; install chromium and chromium-driver to run the browser tests"; exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then sudo=""; elif sudo -n true 2>/dev/null; then sudo="sudo -n"; else \
	  echo "web-browser: not root and no sudo; install chromium and chromium-driver to run the browser tests"; exit 0; fi; \
	echo "web-browser: installing chromium and chromium-driver (Debian packages)"; \
	$$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq chromium chromium-driver >/dev/null

# `make test` (the CI command) runs the browser tests too.
test: web-browser

test-web: protos web-browser
	$(BIN)/pytest tests/unit/web tests/web -q

web: install
	$(BIN)/modaverse-web serve --port 8080 --gateway localhost:50050
