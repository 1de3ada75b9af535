"""Incremental detokenization: the same text as decoding the whole completion every token, from a
few recent tokens each time (the tiny byte-level BPE and a LLaMA-style SentencePiece tokenizer)."""

from __future__ import annotations

import random
from typing import Any

import pytest

from modaverse_llm.detokenize import IncrementalText
from modaverse_llm.stops import StopScanner


@pytest.fixture(scope="module")
def sentencepiece_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from transformers import AutoTokenizer

    from tests.integration.release_world import train_sentencepiece

    folder = tmp_path_factory.mktemp("sp")
    train_sentencepiece(folder)
    return AutoTokenizer.from_pretrained(str(folder))


def decoder(tokenizer: Any, lengths: list[int] | None = None) -> Any:
    def decode(ids: list[int]) -> str:
        if lengths is not None:
            lengths.append(len(ids))
        return str(tokenizer.decode(ids, skip_special_tokens=True))

    return decode


TEXTS = [
    "Modality: [IMAGE] Prompt: a red cat on a café table ✓ ###",
    "Modality: [TEXT] Prompt:  two spaces, ünïcode and 2024!",
    "### Assistant: Modality: [AUDIO] Prompt: loud music\n### Human:",
]


def sequences(tokenizer: Any) -> list[list[int]]:
    """Real answers, and random ids (byte pieces that split characters, added tokens, specials)."""
    out = [tokenizer.encode(t, add_special_tokens=False) for t in TEXTS]
    rng = random.Random(0)
    for _ in range(60):
        out.append([rng.randrange(len(tokenizer)) for _ in range(rng.randint(1, 40))])
    return out


@pytest.mark.parametrize("which", ["tiny", "sentencepiece"])
def test_every_step_equals_a_full_decode(which: str, tokenizer: Any, sentencepiece_tokenizer: Any) -> None:
    tok = tokenizer if which == "tiny" else sentencepiece_tokenizer
    decode = decoder(tok)
    for ids in sequences(tok):
        text = IncrementalText(decode)
        for n, token in enumerate(ids, 1):
            assert text.push(token) == decode(ids[:n]), (which, ids[:n])


@pytest.mark.parametrize("which", ["tiny", "sentencepiece"])
def test_streamed_deltas_add_up_as_with_a_full_decode(which: str, tokenizer: Any, sentencepiece_tokenizer: Any) -> None:
    """Through the stop scanner (which holds back incomplete characters): the same deltas."""
    tok = tokenizer if which == "tiny" else sentencepiece_tokenizer
    decode = decoder(tok)
    for ids in sequences(tok):
        full, incremental, text = StopScanner(["###"]), StopScanner(["###"]), IncrementalText(decode)
        for n, token in enumerate(ids, 1):
            assert incremental.update(text.push(token)) == full.update(decode(ids[:n]))
            if full.stopped:
                break
        assert incremental.flush() == full.flush() and incremental.text == full.text


def test_only_recent_tokens_are_decoded(tokenizer: Any) -> None:
    lengths: list[int] = []
    ids = tokenizer.encode(" ".join(["a red cat on a blue square"] * 20), add_special_tokens=False)
    text = IncrementalText(decoder(tokenizer, lengths))
    for token in ids:
        out = text.push(token)
    assert out == tokenizer.decode(ids) and len(ids) > 100
    assert max(lengths) <= 4  # the settled chunk before and the new token(s), never the whole answer


def test_an_incomplete_character_stays_provisional(tokenizer: Any) -> None:
    ids = tokenizer.encode("ok ✓ done", add_special_tokens=False)
    decode = decoder(tokenizer)
    text = IncrementalText(decode)
    outs = [text.push(t) for t in ids]
    assert any(o.endswith("\ufffd") for o in outs)  # ✓ takes several byte pieces
    assert outs[-1] == "ok ✓ done"
    assert all(not o.rstrip("\ufffd") or "ok ✓ done".startswith(o.rstrip("\ufffd")) for o in outs)


def test_it_needs_no_model() -> None:
    """Any ``decode`` works: here one character per id, so every token settles at once."""
    lengths: list[int] = []

    def decode(ids: list[int]) -> str:
        lengths.append(len(ids))
        return "".join(chr(97 + i) for i in ids)

    text = IncrementalText(decode)
    assert [text.push(i) for i in range(4)] == ["a", "ab", "abc", "abcd"]
    assert max(lengths) == 2
