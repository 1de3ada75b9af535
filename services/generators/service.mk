# Generator targets (included by the root Makefile).
.PHONY: generator-models test-generators bench-generators

generator-models: protos
	$(BIN)/modaverse-generator build-tiny

test-generators: protos
	$(BIN)/pytest tests/unit/generators tests/integration/test_generator_*.py -q

bench-generators: protos
	$(PY) bench/generators.py
