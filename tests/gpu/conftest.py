from __future__ import annotations

import pytest
import torch


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU; run `make test-gpu` on a GPU machine (tests/gpu/README.md)")
    for item in items:
        if "needs_cuda" in item.keywords:
            item.add_marker(skip)
