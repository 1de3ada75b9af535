"""The runner's Embed step on a stand-in ``embed`` (the gateway's is exercised in tests/integration)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest

from modaverse.client import AsyncClient
from modaverse.evaluation.runner import EvalOptions, Evaluator, safe_stem
from modaverse.evaluation.store import decode_vector
from modaverse.types import GeneratedMedia, Invocation


@dataclass(frozen=True)
class FakeEmbeddings:
    texts: np.ndarray[Any, Any]
    images: np.ndarray[Any, Any]
    audio: np.ndarray[Any, Any]
    video: np.ndarray[Any, Any]
    encoder_id: str = "fake"


def items(tmp_path: Path) -> list[tuple[GeneratedMedia, Path]]:
    out = []
    for index, (modality, prompt, ext) in enumerate([("image", "a red circle", "png"), ("audio", "a bell", "wav")]):
        path = tmp_path / f"r-{index}.{ext}"
        path.write_bytes(b"x")
        out.append((GeneratedMedia(Invocation(index, modality, prompt, ""), f"{modality}/{ext}", b"x"), path))
    return out


def evaluator(tmp_path: Path, reply: FakeEmbeddings, calls: list[dict[str, Any]]) -> Evaluator:
    async def embed(**kwargs: Any) -> FakeEmbeddings:
        calls.append(kwargs)
        return reply

    return Evaluator(cast(AsyncClient, None), tmp_path, EvalOptions(), embed)


def test_each_item_is_scored_against_its_prompt_and_both_vectors_are_kept(tmp_path: Path) -> None:
    reply = FakeEmbeddings(
        texts=np.array([[1.0, 0.0], [0.0, 2.0]]),
        images=np.array([[3.0, 0.0]]),
        audio=np.array([[1.0, 1.0]]),
        video=np.zeros((0, 2)),
    )
    calls: list[dict[str, Any]] = []
    scored = asyncio.run(evaluator(tmp_path, reply, calls)._agreement(items(tmp_path)))
    assert calls[0]["texts"] == ["a red circle", "a bell"]
    assert [len(calls[0][k]) for k in ("images", "audio", "video")] == [1, 1, 0]
    assert scored["error"] is None and scored["encoder_id"] == "fake"
    image, audio = scored["items"]
    assert (image["modality"], image["matched"]) == ("image", pytest.approx(1.0))
    assert (audio["modality"], audio["matched"]) == ("audio", pytest.approx(np.sqrt(0.5)))
    assert decode_vector(audio["item_vector"]).tolist() == [1.0, 1.0]
    assert decode_vector(audio["text_vector"]).tolist() == [0.0, 2.0]


def test_a_reply_of_the_wrong_shape_is_recorded_not_raised(tmp_path: Path) -> None:
    reply = FakeEmbeddings(np.zeros((2, 2)), np.zeros((0, 2)), np.zeros((1, 2)), np.zeros((0, 2)))
    scored = asyncio.run(evaluator(tmp_path, reply, [])._agreement(items(tmp_path)))
    assert scored["items"] == [] and scored["error"]["code"] == "CLIENT_ERROR"


def test_record_ids_become_safe_file_names() -> None:
    assert safe_stem("img-0001") == "img-0001"
    assert safe_stem("a/b c:d") == "a_b_c_d"
    assert safe_stem("..") == "record"
