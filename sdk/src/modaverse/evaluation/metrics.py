"""Pure metric functions: text matching, percentiles, the confusion matrix, the shuffled baseline.

Every rate is reported with its denominator (:func:`ratio`), and a rate over nothing is ``None`` ("n/a" in the
report), never a division by zero.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

_WORD = re.compile(r"[a-z0-9]+")
_SPACE = re.compile(r"\s+")


def normalize(text: str) -> str:
    """Case-folded, whitespace collapsed, trailing periods stripped: ``"  A red  Circle. "`` -> ``"a red circle"``."""
    return _SPACE.sub(" ", text.casefold()).strip().rstrip(".").rstrip()


def exact_match(prediction: str, reference: str) -> bool:
    return normalize(prediction) == normalize(reference)


def words(text: str) -> list[str]:
    """The words of ``text``: lower-cased runs of ``[a-z0-9]``."""
    return _WORD.findall(text.casefold())


def token_f1(prediction: str, reference: str) -> float:
    """SQuAD-style word-overlap F1 (words as :func:`words`); 1.0 when both have no words, 0.0 when one has none."""
    pred, ref = words(prediction), words(reference)
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def contains_words(answer: str, value: str) -> bool:
    """Whether ``value``'s words appear in ``answer`` as whole words, in order and adjacent ("light blue")."""
    needle, hay = words(value), words(answer)
    if not needle:
        return False
    return any(hay[i : i + len(needle)] == needle for i in range(len(hay) - len(needle) + 1))


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0-100) with linear interpolation between closest ranks; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def latency_summary(values: Sequence[float]) -> dict[str, Any]:
    """``{"count", "p50", "p95", "p99", "mean"}`` in seconds (None when there are no values)."""
    return {
        "count": len(values),
        "p50": percentile(values, 50),
        "p95": percentile(values, 95),
        "p99": percentile(values, 99),
        "mean": sum(values) / len(values) if values else None,
    }


def ratio(numerator: int, denominator: int) -> dict[str, Any]:
    """``{"value", "numerator", "denominator"}``; value None when the denominator is 0."""
    return {
        "value": numerator / denominator if denominator else None,
        "numerator": numerator,
        "denominator": denominator,
    }


def mean_of(values: Sequence[float]) -> dict[str, Any]:
    """``{"mean", "count"}``; mean None when there are no values."""
    return {"mean": sum(values) / len(values) if values else None, "count": len(values)}


def confusion_matrix(
    pairs: Iterable[tuple[str, str]], expected_labels: Sequence[str], routed_labels: Sequence[str]
) -> dict[str, dict[str, int]]:
    """``{expected: {routed: count}}`` over (expected, routed) pairs, every listed label present (0 when none)."""
    matrix = {e: dict.fromkeys(routed_labels, 0) for e in expected_labels}
    for expected, routed in pairs:
        row = matrix.setdefault(expected, dict.fromkeys(routed_labels, 0))
        row[routed] = row.get(routed, 0) + 1
    return matrix


def derangement(groups: Sequence[Hashable] | int, seed: int) -> list[int] | None:
    """A seeded permutation ``p`` with ``groups[p[i]] != groups[i]`` for every ``i`` (so no fixed point), or
    None when there is none: fewer than 2 items, or more than half of them in one group.

    ``groups`` (e.g. the record each item came from) keeps an item from being paired with its own record's
    prompt; an int ``n`` is ``n`` items in groups of one. The items are shuffled with ``seed`` and laid out
    group by group; each is paired with the one ``s`` places further on (cyclically), ``s`` the largest group's
    size: a group's block is at most ``s`` long and ``s <= n - s``, so no pair lands inside one block."""
    labels: list[Hashable] = list(range(groups)) if isinstance(groups, int) else list(groups)
    n = len(labels)
    if n < 2:
        return None
    sizes = Counter(labels)
    biggest = max(sizes.values())
    if biggest > n - biggest:
        return None
    rng = random.Random(seed)
    members: dict[Hashable, list[int]] = {}
    for index, label in enumerate(labels):
        members.setdefault(label, []).append(index)
    order = list(members)
    rng.shuffle(order)
    layout: list[int] = []
    for label in order:
        block = members[label]
        rng.shuffle(block)
        layout += block
    permutation = [0] * n
    for position, index in enumerate(layout):
        permutation[index] = layout[(position + biggest) % n]
    return permutation


def unit_rows(matrix: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
    """Each row scaled to length 1 (a zero row stays zero)."""
    rows = np.asarray(matrix, dtype=np.float64)
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return np.asarray(rows / np.maximum(norms, 1e-12), dtype=np.float64)


def cosine_rows(a: npt.NDArray[Any], b: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
    """Cosine similarity of row ``i`` of ``a`` with row ``i`` of ``b``."""
    return np.asarray(np.sum(unit_rows(a) * unit_rows(b), axis=1), dtype=np.float64)


@dataclass(frozen=True)
class Agreement:
    """Prompt ↔ item cosine similarities of one modality, and the shuffled-prompt baseline (None: undefined)."""

    items: int
    matched: list[float]
    shuffled: list[float] | None
    baseline_undefined: str = ""  # why there is no baseline

    def summary(self) -> dict[str, Any]:
        matched_mean = sum(self.matched) / len(self.matched) if self.matched else None
        out: dict[str, Any] = {"items": self.items, "matched_mean": matched_mean}
        if self.shuffled is None:
            out.update(shuffled_mean=None, difference=None, matched_beats_shuffled=ratio(0, 0))
            out["baseline"] = f"undefined: {self.baseline_undefined}"
            return out
        shuffled_mean = sum(self.shuffled) / len(self.shuffled)
        beats = sum(m > s for m, s in zip(self.matched, self.shuffled, strict=True))
        out.update(
            shuffled_mean=shuffled_mean,
            difference=None if matched_mean is None else matched_mean - shuffled_mean,
            matched_beats_shuffled=ratio(beats, len(self.matched)),
            baseline="defined",
        )
        return out


def agreement(items: npt.NDArray[Any], texts: npt.NDArray[Any], groups: Sequence[Hashable], seed: int) -> Agreement:
    """``items[i]`` (an item's embedding) against ``texts[i]`` (its prompt's) and against the prompt of another
    group's item (:func:`derangement` of ``groups``, seeded): the baseline an unrelated prompt scores."""
    n = len(groups)
    if n == 0:
        return Agreement(0, [], None, "no items")
    matched = [float(x) for x in cosine_rows(items, texts)]
    permutation = derangement(groups, seed)
    if permutation is None:
        why = (
            "fewer than 2 items"
            if n < 2
            else "more than half of the items come from one record (no other record's prompt for each)"
        )
        return Agreement(n, matched, None, why)
    texts_array = np.asarray(texts)
    shuffled = [float(x) for x in cosine_rows(items, texts_array[permutation])]
    return Agreement(n, matched, shuffled)
