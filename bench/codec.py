"""Tensor codec speed: a 64x4096 float16 tensor through ``common.v1.Tensor`` vs a plain memcpy.

Encode = torch tensor → message (+ serialise); decode = wire bytes → message → tensor view.
Prints GB/s next to a plain memory copy of the same bytes, measured in the same run.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import machine, print_table
from modaverse_protos.common.v1 import common_pb2
from modaverse_runtime.tensors import from_torch, to_numpy, to_torch


def best_seconds(fn: Callable[[], object], repeat: int = 200) -> float:
    for _ in range(10):
        fn()
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    rows = []
    # The closures below are called only within their own loop iteration.
    for shape, dtype in (((64, 4096), torch.float16), ((64, 4096), torch.bfloat16), ((1024, 4096), torch.float16)):
        x = torch.randn(*shape).to(dtype)
        nbytes = x.numel() * x.element_size()
        src = np.frombuffer(x.view(-1).view(torch.uint8).numpy().tobytes(), dtype=np.uint8)
        dst = np.empty_like(src)
        wire = from_torch(x).SerializeToString()

        def memcpy() -> None:
            np.copyto(dst, src)  # noqa: B023

        message = common_pb2.Tensor.FromString(wire)
        cases: dict[str, Callable[[], object]] = {
            "memcpy": memcpy,
            "from_torch": lambda: from_torch(x),  # noqa: B023
            "to_torch": lambda: to_torch(message),  # noqa: B023
            "encode+serialise": lambda: from_torch(x).SerializeToString(),  # noqa: B023
            "parse+decode": lambda: to_torch(common_pb2.Tensor.FromString(wire)),  # noqa: B023
            "parse+to_numpy": lambda: to_numpy(common_pb2.Tensor.FromString(wire)),  # noqa: B023
        }
        assert torch.equal(to_torch(message), x)
        gbps = {name: nbytes / best_seconds(fn) / 1e9 for name, fn in cases.items()}
        label = f"{shape[0]}x{shape[1]} {str(dtype).removeprefix('torch.')}"
        rows.append([label, f"{nbytes / 2**20:.2f}", *(gbps[name] for name in cases)])
        names = list(cases)
    print(f"\ntensor codec, best of 200; {machine()}\n")
    print_table(["tensor", "MiB", *(f"{n} GB/s" for n in names)], rows)
    print(
        "\nfrom_torch = one copy into the bytes a protobuf field needs (upb then copies once more);"
        "\nto_torch = a view over the bytes that reading the field yields (upb's one copy, none of ours)."
    )


if __name__ == "__main__":
    main()
