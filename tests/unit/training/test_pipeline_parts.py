"""Prompt building, feature cache, evaluation scoring, parameter counts, results table."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from modaverse_llm.prompt import PromptBuilder
from modaverse_llm.types import MediaRows, Message, Role
from modaverse_training.data import IGNORE, collate, encode_example
from modaverse_training.evaluate import describes, score, token_f1
from modaverse_training.features import FeatureCache
from modaverse_training.params import SizeConfig, count_parameters, hand_count
from modaverse_training.report import END, START, write_results
from modaverse_training.schema import Example, Invocation, MediaRef

from .conftest import Tiny


def test_training_prompt_is_the_serving_prompt_plus_the_target(tiny: Tiny) -> None:
    tokenizer = tiny.model().tokenizer
    builder = PromptBuilder(tokenizer)
    ex = Example(
        "Describe this image.", (MediaRef("image", "images/img_00000.png"),), (Invocation("text", "A red circle."),)
    )
    enc = encode_example(builder, ex, tiny.world, 1024)
    row = torch.zeros(1, 256)
    served = builder.build([Message(Role.USER, (MediaRows("image", row), ex.instruction))], 1024, 32)
    ids = [i for p in served.pieces if isinstance(p, list) for i in p]
    (media_pos,) = enc.media_pos
    assert list(enc.ids[: enc.prompt_len]) == [*ids[:media_pos], enc.ids[media_pos], *ids[media_pos:]]
    assert served.length == enc.prompt_len
    # The release's target: the meta-response then " ###", one stripped run (byte-level: no leading space).
    assert tokenizer.decode(list(enc.ids[enc.prompt_len :])) == "Modality: [TEXT] Prompt: A red circle. ###"
    batch = collate([enc], [[7]], pad_id=0)
    labels = batch.labels[0].tolist()
    assert labels[: enc.prompt_len] == [IGNORE] * enc.prompt_len  # loss only on the response
    assert labels[enc.prompt_len :] == list(enc.ids[enc.prompt_len :])
    assert batch.media_p.tolist() == [media_pos] and batch.media_index.tolist() == [7]


def test_feature_cache_hits_on_a_second_run(tiny: Tiny, tmp_path: Path) -> None:
    media = [("image", tiny.world / f"images/img_{i:05d}.png") for i in range(4)] + [
        ("audio", tiny.world / "audio/aud_00000.wav")
    ]
    first, stats = FeatureCache(tiny.spec.encoder, tmp_path).vectors(media, progress=False)
    assert (stats.hits, stats.computed) == (0, 5)
    again, stats = FeatureCache(tiny.spec.encoder, tmp_path).vectors(media, progress=False)  # a new process
    assert (stats.hits, stats.computed) == (5, 0)
    torch.testing.assert_close(first, again)
    assert first.shape == (5, 256) and not torch.equal(first[0], first[1])
    changed = media[0][1]
    os.utime(changed, ns=(changed.stat().st_atime_ns, changed.stat().st_mtime_ns + 10**9))
    _, stats = FeatureCache(tiny.spec.encoder, tmp_path).vectors(media, progress=False)
    assert (stats.hits, stats.computed) == (4, 1)  # a changed file is encoded again


def test_scores() -> None:
    examples = [
        Example("Draw a red circle.", (), (Invocation("image", "a red circle"),)),
        Example("What is this?", (MediaRef("image", "x.png"),), (Invocation("text", "A blue star."),), task="input"),
        Example("Play a beep.", (), (Invocation("audio", "a high beep"),)),
    ]
    predictions = [
        " Modality: [IMAGE] Prompt: a red circle",  # exact (the stop string is cut by the server)
        " Modality: [TEXT] Prompt: A blue square.",  # routed, wrong shape
        " Modality: [VIDEO] Prompt: a high beep",  # misrouted
    ]
    result = score(examples, predictions)
    assert result.routing == pytest.approx(2 / 3)
    assert result.exact == pytest.approx(1 / 3)
    assert result.token_f1 == pytest.approx((1 + 2 / 3 + 1) / 3)
    assert (result.describe, result.describe_count) == (0.0, 1)
    assert (result.describe_colour, result.describe_shape) == (1.0, 0.0)
    assert token_f1("a red circle", "a red square") == pytest.approx(2 / 3)
    assert describes("A red circle.", "a red circle") and not describes("A red star.", "a red circle")


def test_trainable_parameter_count_matches_a_hand_computation() -> None:
    size = SizeConfig(hidden=64, intermediate=128, layers=3, heads=4, vocab=100, embed_dim=32, lora_r=8)
    # 3 layers x 4 projections x r(64 + 64), one Linear(32 -> 64) with bias, 6 added rows in 2 matrices
    expected = 3 * 4 * 8 * 128 + (32 * 64 + 64) + 6 * 64 * 2
    assert count_parameters(size).trainable == hand_count(size) == expected == 15168
    per_modality = SizeConfig(**{**size.__dict__, "adaptor_mode": "per_modality"})
    assert count_parameters(per_modality).trainable == expected + 2 * (32 * 64 + 64)


def test_results_table_is_written_between_markers(tmp_path: Path) -> None:
    doc = tmp_path / "training.md"
    doc.write_text(f"# Training\n\nbefore\n\n{START}\nold\n{END}\n\nafter\n")
    summary = {"eval": {"count": 10, "routing": 0.95, "exact": 0.8}, "test": {"routing": 0.9}, "total_seconds": 600}
    write_results(doc, summary)
    text = doc.read_text()
    assert "old" not in text and "| modality routing | 95.0% | 90.0% |" in text and "10.0 min" in text
    assert "| exact prompt match | 80.0% | n/a |" in text  # a missing figure is said, not invented
    assert text.startswith("# Training\n\nbefore") and text.endswith("after\n")
