"""The metric functions on hand-made values."""

from __future__ import annotations

import numpy as np
import pytest

from modaverse.evaluation.metrics import (
    agreement,
    confusion_matrix,
    contains_words,
    derangement,
    exact_match,
    latency_summary,
    mean_of,
    normalize,
    percentile,
    ratio,
    token_f1,
)


def test_exact_match_normalises_case_whitespace_and_a_trailing_period() -> None:
    assert normalize("  A red\t\n Circle.  ") == "a red circle"
    assert exact_match("A RED circle.", "a red circle")
    assert exact_match("a red circle...", "a red circle")
    assert not exact_match("a red circle", "a red square")
    assert not exact_match("a red, circle", "a red circle")  # only the trailing period goes


def test_token_f1_is_word_overlap() -> None:
    assert token_f1("a red circle", "A red circle.") == 1.0
    assert token_f1("a big red circle", "a red circle") == pytest.approx(2 * 0.75 * 1.0 / 1.75)
    assert token_f1("blue square", "red circle") == 0.0
    assert token_f1("red red", "red") == pytest.approx(2 * 0.5 * 1 / 1.5)  # a repeated word counts once per match
    assert token_f1("", "") == 1.0
    assert token_f1("", "red") == 0.0 and token_f1("...", "red") == 0.0


def test_words_in_an_answer() -> None:
    assert contains_words("It is a red circle.", "red")
    assert contains_words("a light blue star", "Light Blue")
    assert not contains_words("a reddish circle", "red")
    assert not contains_words("blue light", "light blue")
    assert not contains_words("anything", "")


def test_percentiles_with_small_counts() -> None:
    assert percentile([], 50) is None
    assert percentile([2.0], 99) == 2.0
    assert percentile([1.0, 3.0], 50) == 2.0
    assert percentile([1.0, 3.0], 95) == pytest.approx(2.9)
    assert percentile([5.0, 1.0, 4.0, 2.0, 3.0], 50) == 3.0
    assert percentile([5.0, 1.0, 4.0, 2.0, 3.0], 100) == 5.0
    assert percentile([5.0, 1.0, 4.0, 2.0, 3.0], 0) == 1.0
    assert latency_summary([]) == {"count": 0, "p50": None, "p95": None, "p99": None, "mean": None}
    assert latency_summary([1.0, 2.0, 3.0])["count"] == 3


def test_empty_denominators_are_none_not_errors() -> None:
    assert ratio(0, 0) == {"value": None, "numerator": 0, "denominator": 0}
    assert ratio(1, 4)["value"] == 0.25
    assert mean_of([]) == {"mean": None, "count": 0}
    assert mean_of([1.0, 0.0]) == {"mean": 0.5, "count": 2}


def test_confusion_matrix_counts_expected_by_routed() -> None:
    pairs = [("image", "image"), ("image", "text"), ("text", "text"), ("audio", "error"), ("image", "image")]
    matrix = confusion_matrix(pairs, ["text", "image", "audio", "video"], ["text", "image", "audio", "video", "error"])
    assert matrix["image"] == {"text": 1, "image": 2, "audio": 0, "video": 0, "error": 0}
    assert matrix["audio"]["error"] == 1
    assert sum(matrix["video"].values()) == 0


@pytest.mark.parametrize("n", [2, 3, 5, 10, 31])
def test_a_derangement_has_no_fixed_point_and_is_seeded(n: int) -> None:
    for seed in range(20):
        perm = derangement(n, seed)
        assert perm is not None
        assert sorted(perm) == list(range(n))
        assert all(perm[i] != i for i in range(n))
        assert derangement(n, seed) == perm
    if n > 3:
        assert len({tuple(derangement(n, seed) or []) for seed in range(20)}) > 1


def test_a_derangement_pairs_items_of_different_groups() -> None:
    groups = ["a", "a", "b", "c", "c", "d"]
    for seed in range(30):
        perm = derangement(groups, seed)
        assert perm is not None and sorted(perm) == list(range(6))
        assert all(groups[perm[i]] != groups[i] for i in range(6))
    assert derangement(["a", "a", "a", "b"], 0) is None  # no way to give every "a" another group's item
    assert derangement(["a", "a", "b", "b"], 0) is not None
    assert derangement(1, 0) is None and derangement(0, 0) is None


def test_agreement_against_the_shuffled_baseline_on_hand_made_vectors() -> None:
    # Each item points exactly where its own prompt does; prompts are orthogonal to each other.
    texts = np.eye(3, 4) * 2.0  # scale does not matter (cosine)
    items = np.eye(3, 4)
    scores = agreement(items, texts, ["r1", "r2", "r3"], seed=0)
    assert scores.matched == pytest.approx([1.0, 1.0, 1.0])
    assert scores.shuffled == pytest.approx([0.0, 0.0, 0.0])
    summary = scores.summary()
    assert summary["matched_mean"] == pytest.approx(1.0) and summary["shuffled_mean"] == pytest.approx(0.0)
    assert summary["difference"] == pytest.approx(1.0)
    assert summary["matched_beats_shuffled"] == {"value": 1.0, "numerator": 3, "denominator": 3}
    assert summary["baseline"] == "defined"


def test_agreement_with_a_known_shuffle() -> None:
    items = np.array([[1.0, 0.0], [0.0, 1.0]])
    texts = np.array([[1.0, 1.0], [0.0, 1.0]])  # item 0 is 45° from its prompt, item 1 on its prompt
    scores = agreement(items, texts, ["a", "b"], seed=3)  # two items: the only derangement swaps them
    assert scores.matched == pytest.approx([np.sqrt(0.5), 1.0])
    assert scores.shuffled == pytest.approx([0.0, np.sqrt(0.5)])
    assert scores.summary()["matched_beats_shuffled"]["numerator"] == 2


def test_the_baseline_is_undefined_with_fewer_than_two_items_or_one_record() -> None:
    one = agreement(np.ones((1, 3)), np.ones((1, 3)), ["r"], seed=0)
    assert one.shuffled is None and one.summary()["baseline"] == "undefined: fewer than 2 items"
    assert one.summary()["matched_beats_shuffled"] == {"value": None, "numerator": 0, "denominator": 0}
    same = agreement(np.ones((2, 3)), np.ones((2, 3)), ["r", "r"], seed=0)
    assert same.shuffled is None and "one record" in same.summary()["baseline"]
    none = agreement(np.zeros((0, 3)), np.zeros((0, 3)), [], seed=0)
    assert none.summary()["matched_mean"] is None and none.items == 0
