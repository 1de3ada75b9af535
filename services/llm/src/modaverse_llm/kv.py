"""The running batch's KV cache: preallocated slabs that rows join and leave between steps.

Per layer, keys and values live in slabs of shape (rows, kv heads, columns, head dim). The batch's
rows are the first ``rows`` of them; every row's sequence ends at column ``end`` (rows are
right-aligned, shorter ones padded on the left and masked), and the batch's window is
``[start, end)``. A decode step writes one column in place, so no step copies the cache (a
``DynamicCache`` concatenates every layer's whole cache each step). Rows joining are written into
free rows, right-aligned at ``end``; rows leaving are replaced by rows moved from the tail. Columns
left of ``start`` and past a row's own prefix may hold stale values: they are finite (slabs start
zeroed) and masked, so they contribute nothing.

The model sees an ordinary transformers ``Cache`` whose layers return views of the slabs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from transformers.cache_utils import Cache, DynamicLayer


class _SlabLayer(DynamicLayer):  # type: ignore[no-untyped-call]  # transformers' untyped __init_subclass__
    def __init__(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.k_slab, self.v_slab = keys, values
        self.dtype, self.device = keys.dtype, keys.device
        self.is_initialized = True
        self.rows = self.start = self.end = 0

    def view(self, rows: int, start: int, end: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Point ``keys``/``values`` (what attention reads) at rows ``:rows``, columns ``start:end``."""
        self.rows, self.start, self.end = rows, start, end
        keys, values = self.k_slab[:rows, :, start:end], self.v_slab[:rows, :, start:end]
        self.keys, self.values = keys, values
        return keys, values

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        n = key_states.shape[-2]
        self.k_slab[: self.rows, :, self.end : self.end + n] = key_states
        self.v_slab[: self.rows, :, self.end : self.end + n] = value_states
        return self.view(self.rows, self.start, self.end + n)


class BatchKV(Cache):
    def __init__(self, layers: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """``layers``: each layer's (keys, values) slab, (rows, heads, columns, head dim), zeroed."""
        super().__init__(layers=[_SlabLayer(k, v) for k, v in layers])
        self.rows = self.start = self.end = 0

    @classmethod
    def allocate(
        cls, like: Sequence[tuple[torch.Tensor, torch.Tensor]], rows: int, columns: int, end: int = 0
    ) -> BatchKV:
        """Empty slabs for ``rows`` × ``columns`` positions, shaped after ``like`` (a prefill's
        layers), whose rows will end at column ``end``."""
        slabs = []
        for k, v in like:
            slabs.append(
                (
                    k.new_zeros(rows, k.shape[1], columns, k.shape[3]),
                    v.new_zeros(rows, v.shape[1], columns, v.shape[3]),
                )
            )
        cache = cls(slabs)
        cache.start = cache.end = end
        cache._sync()
        return cache

    def _slabs(self) -> list[_SlabLayer]:
        return [layer for layer in self.layers if isinstance(layer, _SlabLayer)]

    def _sync(self) -> None:
        for layer in self._slabs():
            layer.view(self.rows, self.start, self.end)

    @property
    def capacity(self) -> tuple[int, int]:
        """(rows, columns) the slabs hold."""
        k = self._slabs()[0].k_slab
        return k.shape[0], k.shape[2]

    @property
    def positions(self) -> int:
        """KV positions held (per layer): rows × columns of the slabs."""
        rows, columns = self.capacity
        return rows * columns

    @property
    def width(self) -> int:
        return self.end - self.start

    def fits(self, rows: int, width: int, tail: int) -> bool:
        """Whether ``rows`` more rows whose prompts take ``width`` columns fit without moving anything,
        with ``tail`` free columns after ``end`` for the steps still to come."""
        cap_rows, cap_columns = self.capacity
        return self.rows + rows <= cap_rows and width <= self.end and self.end + tail <= cap_columns

    def add_rows(self, layers: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Append rows from a prefill's (keys, values) per layer, (n, heads, width, head dim),
        right-aligned at ``end`` (check ``fits`` first)."""
        n, width = layers[0][0].shape[0], layers[0][0].shape[2]
        for layer, (k, v) in zip(self._slabs(), layers, strict=True):
            layer.k_slab[self.rows : self.rows + n, :, self.end - width : self.end] = k
            layer.v_slab[self.rows : self.rows + n, :, self.end - width : self.end] = v
        self.rows += n
        self.start = min(self.start, self.end - width) if self.rows > n else self.end - width
        self._sync()

    def move_rows(self, dst: Sequence[int], src: Sequence[int], rows: int) -> None:
        """Copy rows ``src`` over rows ``dst``, then keep the first ``rows``."""
        if dst:
            index_dst = torch.tensor(list(dst), device=self._slabs()[0].device)
            index_src = torch.tensor(list(src), device=self._slabs()[0].device)
            for layer in self._slabs():
                layer.k_slab[index_dst] = layer.k_slab[index_src]
                layer.v_slab[index_dst] = layer.v_slab[index_src]
        self.rows = rows
        self._sync()

    def trim(self, columns: int) -> None:
        """Drop ``columns`` columns at the left of the window (padding no row needs any more)."""
        self.start += columns
        self._sync()

    def rebuilt(self, rows: int, columns: int, end: int) -> BatchKV:
        """New slabs of ``rows`` × ``columns`` with this window copied so that it ends at ``end``."""
        fresh = BatchKV.allocate([(s.k_slab, s.v_slab) for s in self._slabs()], rows, columns)
        width = self.width
        for new, old in zip(fresh._slabs(), self._slabs(), strict=True):
            keys, values = old.view(self.rows, self.start, self.end)
            new.k_slab[: self.rows, :, end - width : end] = keys
            new.v_slab[: self.rows, :, end - width : end] = values
        fresh.rows, fresh.start, fresh.end = self.rows, end - width, end
        fresh._sync()
        return fresh

    def commit(self) -> None:
        """After a forward: the layers have each written their new columns."""
        ends = {layer.end for layer in self._slabs()}
        assert len(ends) == 1, "layers out of step"
        self.end = ends.pop()
        self._sync()

    def rollback(self) -> None:
        """After a failed forward: forget the columns some layers wrote."""
        self._sync()
