"""The LLM service over real gRPC on loopback: streaming, multi-turn, media, adapters, batching,
cancellation, and every bad input."""

from __future__ import annotations

import asyncio
import math
import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from prometheus_client import REGISTRY

from modaverse_protos.common.v1 import common_pb2
from modaverse_protos.llm.v1 import llm_pb2

from .llm_fixtures import (
    GREEDY,
    RunningLLM,
    assistant,
    generate,
    media,
    request,
    rows,
    start_llm,
    text,
    user,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")

STOP, LENGTH = common_pb2.FINISH_REASON_STOP, common_pb2.FINISH_REASON_LENGTH
NEVER = ["\x00never\x00"]  # a stop string the model cannot produce: runs to max_tokens or EOS


async def assert_serving(running: RunningLLM) -> None:
    assert await running.health() == health_pb2.HealthCheckResponse.SERVING


async def test_health_and_reflection(llm: RunningLLM) -> None:
    for name in ("", "modaverse.llm.v1.LLMService"):
        assert await llm.health(name) == health_pb2.HealthCheckResponse.SERVING

    def reflect() -> list[str]:
        with grpc.insecure_channel(llm.target) as channel:
            return list(ProtoReflectionDescriptorDatabase(channel).get_services())

    assert "modaverse.llm.v1.LLMService" in await asyncio.to_thread(reflect)


async def test_info(llm: RunningLLM) -> None:
    info = await llm.stub.Info(llm_pb2.InfoRequest())
    assert (info.backend, info.hidden_size, info.context_length, info.profile) == ("transformers", 256, 1024, "tiny")
    assert info.dtype == common_pb2.DTYPE_FLOAT32 and info.max_batch_size == 32
    assert [(a.name, a.rank, a.is_default) for a in info.adapters] == [("default", 32, True)]
    assert info.default_sampling.max_tokens == 246 and math.isclose(info.default_sampling.top_p, 0.01, rel_tol=1e-6)
    assert list(info.default_sampling.stop) == ["###"]


async def test_tiny_hidden_size_matches_the_encoder(llm: RunningLLM) -> None:
    from modaverse_encoder.tiny import TINY_LLM_HIDDEN_SIZE

    info = await llm.stub.Info(llm_pb2.InfoRequest())
    assert info.hidden_size == TINY_LLM_HIDDEN_SIZE


async def test_deltas_concatenate_to_the_final_text(llm: RunningLLM) -> None:
    req = request([user(media(rows(0)), text("draw a red cat"))], max_tokens=24, stop=NEVER, **GREEDY)
    deltas, final = await generate(llm.stub, req)
    assert "".join(deltas) == final.text
    assert len(deltas) >= 2  # streamed, not one chunk at the end
    assert final.finish_reason in (STOP, LENGTH) and 1 <= final.completion_tokens <= 24
    # BOS + "### Human: <Media>" + 1 row + "</Media> draw a red cat\n### Assistant:"
    assert final.prompt_tokens > 10 and final.truncated_messages == 0


async def test_stop_string_ends_the_answer(llm: RunningLLM) -> None:
    req = request([user(text("tell me a story"))], max_tokens=40, stop=NEVER, **GREEDY)
    _, free = await generate(llm.stub, req)
    assert len(free.text) >= 3
    stop = free.text[1:3]  # a string the greedy answer is known to contain
    deltas, final = await generate(
        llm.stub, request([user(text("tell me a story"))], max_tokens=40, stop=[stop], **GREEDY)
    )
    assert final.finish_reason == STOP and stop not in final.text
    assert free.text.startswith(final.text) and "".join(deltas) == final.text


async def test_greedy_is_deterministic_and_media_matter(llm: RunningLLM) -> None:
    def req(seed: int) -> llm_pb2.GenerateRequest:
        return request([user(media(rows(seed)), text("what is this?"))], max_tokens=16, stop=NEVER, **GREEDY)

    (_, a), (_, b), (_, c) = [await generate(llm.stub, req(s)) for s in (1, 1, 2)]
    assert a.text == b.text
    assert a.text != c.text  # the projected rows reach the model


async def test_several_media_per_turn_and_multi_turn(llm: RunningLLM) -> None:
    one = [user(media(rows(3)), text("compare"))]
    two = [user(media(rows(3)), media(rows(4), common_pb2.MODALITY_AUDIO), text("compare"))]
    _, f1 = await generate(llm.stub, request(one, max_tokens=8, **GREEDY))
    _, f2 = await generate(llm.stub, request(two, max_tokens=8, **GREEDY))
    assert f2.prompt_tokens == f1.prompt_tokens + 3  # <Media> row </Media>, nothing between two items
    history = [
        user(media(rows(3)), text("what is it?")),
        assistant("Modality: [TEXT] Prompt: a dog"),
        user(text("again")),
    ]
    _, f3 = await generate(llm.stub, request(history, max_tokens=8, **GREEDY))
    _, f4 = await generate(llm.stub, request(history[-1:], max_tokens=8, **GREEDY))
    assert f3.prompt_tokens > f4.prompt_tokens + 10 and f3.truncated_messages == 0


async def test_long_history_is_truncated_oldest_first(llm_model_dir: Path) -> None:
    running = await start_llm(llm_model_dir, context_length=96)
    try:
        history = []
        for i in range(6):
            history += [user(text(f"question {i} about a cat")), assistant(f"answer {i} about a dog")]
        _, final = await generate(running.stub, request([*history, user(text("last"))], max_tokens=8, **GREEDY))
        assert final.truncated_messages > 0 and final.truncated_messages % 2 == 0
        assert final.prompt_tokens + 8 <= 96
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await generate(running.stub, request([user(text("word " * 200))], **GREEDY))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "context length is 96" in str(
            err.value.details()
        )
    finally:
        await running.stop()


async def test_adapter_selection(llm: RunningLLM) -> None:
    msgs = [user(media(rows(5)), text("make a picture"))]
    outs = {}
    for name in ("", "default", "base"):
        _, final = await generate(llm.stub, request(msgs, adapter=name, max_tokens=16, stop=NEVER, **GREEDY))
        outs[name] = final.text
    assert outs[""] == outs["default"]
    assert outs["base"] != outs["default"]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await generate(llm.stub, request(msgs, adapter="nope", **GREEDY))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND and "nope" in str(err.value.details())


async def test_load_and_unload_adapters_at_run_time(llm: RunningLLM, second_adapter: Path) -> None:
    msgs = [user(text("sing a song"))]

    async def answer(adapter: str) -> str:
        _, final = await generate(llm.stub, request(msgs, adapter=adapter, max_tokens=16, stop=NEVER, **GREEDY))
        return final.text

    before = await answer("")
    reply = await llm.stub.LoadAdapter(llm_pb2.LoadAdapterRequest(name="second", path=str(second_adapter)))
    assert (reply.adapter.name, reply.adapter.rank, reply.adapter.is_default) == ("second", 32, False)
    info = await llm.stub.Info(llm_pb2.InfoRequest())
    assert sorted(a.name for a in info.adapters) == ["default", "second"]
    second = await answer("second")
    assert second != before and await answer("") == before
    # Mixed adapters in one batch equal each alone.
    together = await asyncio.gather(answer("second"), answer(""), answer("base"))
    assert list(together[:2]) == [second, before]

    for bad, code in [
        (llm_pb2.LoadAdapterRequest(name="second", path=str(second_adapter)), grpc.StatusCode.ALREADY_EXISTS),
        (llm_pb2.LoadAdapterRequest(name="x", path="/nonexistent"), grpc.StatusCode.INVALID_ARGUMENT),
        (llm_pb2.LoadAdapterRequest(name="base", path=str(second_adapter)), grpc.StatusCode.INVALID_ARGUMENT),
        (llm_pb2.LoadAdapterRequest(name="y", path=""), grpc.StatusCode.INVALID_ARGUMENT),
    ]:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await llm.stub.LoadAdapter(bad)
        assert err.value.code() == code

    await llm.stub.UnloadAdapter(llm_pb2.UnloadAdapterRequest(name="second"))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await answer("second")
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    for name, code in [("second", grpc.StatusCode.NOT_FOUND), ("default", grpc.StatusCode.FAILED_PRECONDITION)]:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await llm.stub.UnloadAdapter(llm_pb2.UnloadAdapterRequest(name=name))
        assert err.value.code() == code
    assert await answer("") == before
    await assert_serving(llm)


async def test_make_default_switches_the_default(llm_model_dir: Path, second_adapter: Path) -> None:
    running = await start_llm(llm_model_dir)
    try:
        await running.stub.LoadAdapter(
            llm_pb2.LoadAdapterRequest(name="second", path=str(second_adapter), make_default=True)
        )
        info = await running.stub.Info(llm_pb2.InfoRequest())
        assert {a.name: a.is_default for a in info.adapters} == {"default": False, "second": True}
        msgs = [user(text("hello"))]
        _, a = await generate(running.stub, request(msgs, max_tokens=12, stop=NEVER, **GREEDY))
        _, b = await generate(running.stub, request(msgs, adapter="second", max_tokens=12, stop=NEVER, **GREEDY))
        assert a.text == b.text
        await running.stub.UnloadAdapter(llm_pb2.UnloadAdapterRequest(name="default"))  # no longer the default
    finally:
        await running.stop()


def batch_requests() -> list[llm_pb2.GenerateRequest]:
    out = []
    for i in range(8):
        msgs = [user(media(rows(10 + i, n=1 + i % 2)), text("describe this " * (1 + i % 3)))]
        out.append(request(msgs, adapter=["", "base"][i % 2], max_tokens=12 + 2 * i, stop=NEVER, **GREEDY))
    return out


async def test_batching_equals_one_at_a_time(llm: RunningLLM) -> None:
    reqs = batch_requests()
    alone = [(await generate(llm.stub, r))[1] for r in reqs]
    batch_sizes = REGISTRY.get_sample_value("modaverse_batch_size_sum", {"queue": "llm"}) or 0.0
    together = await asyncio.gather(*(generate(llm.stub, r) for r in reqs))
    assert [f.text for _, f in together] == [f.text for f in alone]
    assert [f.completion_tokens for _, f in together] == [f.completion_tokens for f in alone]
    grown = (REGISTRY.get_sample_value("modaverse_batch_size_sum", {"queue": "llm"}) or 0.0) - batch_sizes
    count = REGISTRY.get_sample_value("modaverse_batch_size_count", {"queue": "llm"})
    assert grown == 8 and count is not None
    assert REGISTRY.get_sample_value("modaverse_batch_size_bucket", {"queue": "llm", "le": "1.0"}) != count


def finished(reason: str) -> float:
    return REGISTRY.get_sample_value("modaverse_llm_finished_total", {"reason": reason}) or 0.0


async def test_cancellation_frees_the_slot(llm_model_dir: Path) -> None:
    running = await start_llm(llm_model_dir, max_batch_size=1, max_tokens_cap=1000)
    try:
        before = finished("cancelled")
        long = request([user(text("tell me everything"))], max_tokens=1000, stop=NEVER, **GREEDY)
        call = running.stub.Generate(long)
        async for reply in call:
            assert reply.WhichOneof("event") == "delta"
            break
        call.cancel()
        deadline = time.monotonic() + 10
        while finished("cancelled") == before:
            assert time.monotonic() < deadline, "the cancelled row kept running"
            await asyncio.sleep(0.01)
        # The only slot is free again: a short request runs at once.
        _, final = await generate(running.stub, request([user(text("hi"))], max_tokens=3, **GREEDY))
        assert final.completion_tokens <= 3
        # A deadline stops generation the same way. On a loaded machine the deadline may pass before
        # the server starts the call (then no row ever runs): try again until a row has streamed.
        before = finished("cancelled")
        streamed: list[llm_pb2.GenerateResponse] = []
        for _ in range(20):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await asyncio.wait_for(_with_deadline(running, long, streamed), 30)
            assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            if streamed:
                break
        assert streamed, "no call started before its deadline"
        deadline = time.monotonic() + 10
        while finished("cancelled") == before:
            assert time.monotonic() < deadline, "the row kept running past its deadline"
            await asyncio.sleep(0.01)
        await assert_serving(running)
    finally:
        await running.stop()


async def _with_deadline(
    running: RunningLLM, req: llm_pb2.GenerateRequest, streamed: list[llm_pb2.GenerateResponse]
) -> None:
    """Stream ``req`` with a 50 ms deadline into ``streamed`` (what arrived before it passed)."""
    async for reply in running.stub.Generate(req, timeout=0.05):
        streamed.append(reply)


def bad_rows(**kw: Any) -> llm_pb2.Segment:
    seg = media(rows(0))
    for k, v in kw.items():
        if k == "shape":
            del seg.embeddings.rows.shape[:]
            seg.embeddings.rows.shape.extend(v)
        else:
            setattr(seg.embeddings.rows, k, v)
    return seg


BAD: list[tuple[str, llm_pb2.GenerateRequest, str]] = [
    ("hidden size", request([user(media(rows(0, hidden=128)))]), "hidden size is 256"),
    ("rank 3", request([user(bad_rows(shape=[1, 1, 256]))]), "must have shape"),
    ("rank 1", request([user(bad_rows(shape=[256]))]), "must have shape"),
    ("dtype", request([user(bad_rows(dtype=7))]), "not supported"),
    ("bytes", request([user(bad_rows(data=b"\x00" * 12))]), "needs 1024 bytes"),
    ("nan", request([user(media(np.full((1, 256), np.nan, np.float32)))]), "NaN or Inf"),
    ("inf", request([user(media(np.full((1, 256), -np.inf, np.float32)))]), "NaN or Inf"),
    ("text modality", request([user(media(rows(0), common_pb2.MODALITY_TEXT))]), "IMAGE, VIDEO or AUDIO"),
    ("too long", request([user(text("word " * 2000))]), "context length is 1024"),
    ("no messages", request([]), "messages is empty"),
    ("empty turn", request([user(text("   "))]), "last user message is empty"),
    ("no segments", request([user()]), "last user message is empty"),
    ("last is assistant", request([user(text("a")), assistant("b")]), "last message must be the user"),
    ("no role", request([llm_pb2.Message(segments=[text("a")])]), "role must be"),
    ("empty segment", request([user(llm_pb2.Segment())]), "needs text or embeddings"),
    ("negative temperature", request([user(text("a"))], temperature=-1.0), "temperature"),
    ("nan temperature", request([user(text("a"))], temperature=math.nan), "temperature"),
    ("top_p 0", request([user(text("a"))], top_p=0.0), "top_p"),
    ("top_p 2", request([user(text("a"))], top_p=2.0), "top_p"),
    ("max_tokens 0", request([user(text("a"))], max_tokens=0), "max_tokens"),
    ("max_tokens huge", request([user(text("a"))], max_tokens=10**6), "max_tokens"),
    ("many stops", request([user(text("a"))], stop=[str(i) for i in range(9)]), "at most 8"),
    ("empty stop", request([user(text("a"))], stop=[""]), "stop[0]"),
    ("repetition penalty", request([user(text("a"))], repetition_penalty=-1.0), "repetition_penalty"),
    ("top_logprobs alone", request([user(text("a"))], top_logprobs=3), "top_logprobs needs sampling.logprobs"),
    ("top_logprobs 21", request([user(text("a"))], logprobs=True, top_logprobs=21), "top_logprobs must be in [0, 20]"),
]


@pytest.mark.parametrize(("name", "req", "match"), BAD, ids=[b[0] for b in BAD])
async def test_bad_input_is_invalid_argument(llm: RunningLLM, name: str, req: Any, match: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await generate(llm.stub, req)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, name
    assert match in str(err.value.details())
    await assert_serving(llm)


# -- per-token logprobs ----------------------------------------------------------------------------


async def stream(
    stub: Any, req: llm_pb2.GenerateRequest
) -> tuple[list[llm_pb2.GenerateResponse], list[llm_pb2.PositionLogprobs], llm_pb2.Final]:
    """Every reply, every logprobs entry in stream order, and the Final."""
    replies = [reply async for reply in stub.Generate(req)]
    assert replies and replies[-1].WhichOneof("event") == "final"
    assert all(r.WhichOneof("event") == "delta" for r in replies[:-1])
    return replies, [e for r in replies for e in r.logprobs], replies[-1].final


def assert_consistent(e: llm_pb2.PositionLogprobs, top: int) -> None:
    """One position on its own: a distribution's most likely tokens, the chosen one among them if it ranks."""
    values = [t.logprob for t in e.top]
    assert len(e.top) == top and len({t.token_id for t in e.top}) == top
    assert values == sorted(values, reverse=True)
    assert e.chosen.logprob <= 0 and all(v <= 0 for v in values)
    assert sum(math.exp(v) for v in values) <= 1 + 1e-5
    same = [t for t in e.top if t.token_id == e.chosen.token_id]
    if same:
        assert same[0].logprob == e.chosen.logprob and same[0].token == e.chosen.token
    elif values:
        assert e.chosen.logprob <= values[-1]


@pytest.fixture(scope="module")
def llm_tokenizer(llm_model_dir: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(llm_model_dir / "tiny" / "llm" / "base"))


def check_tokens(tokenizer: Any, entries: list[llm_pb2.PositionLogprobs], final: llm_pb2.Final) -> None:
    """The chosen tokens are the answer's tokens; every token string is the tokenizer's own."""
    chosen = [e.chosen.token_id for e in entries]
    assert len(entries) == final.completion_tokens
    assert tokenizer.decode(chosen, skip_special_tokens=True).rstrip("\ufffd") == final.text
    for e in entries:
        ids = [e.chosen.token_id, *(t.token_id for t in e.top)]
        assert [e.chosen.token, *(t.token for t in e.top)] == tokenizer.convert_ids_to_tokens(ids)


async def test_logprobs_equal_a_reference_model(llm_model_dir: Path, llm_tokenizer: Any) -> None:
    """Every position's chosen and top-5 logprobs equal log_softmax of the same HF model (+ peft
    adapter, or none for "base") run by hand over the service's own prompt ids and its answer."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from modaverse_llm import convert
    from modaverse_llm.service import make_backend, make_spec
    from modaverse_llm.transformers_backend import TransformersSettings
    from modaverse_protos.llm.v1 import llm_pb2_grpc

    from .in_process import serve

    settings = TransformersSettings(host="127.0.0.1", port=0, model_dir=llm_model_dir)
    backend = make_backend(settings)
    running = await serve(make_spec(settings, backend), settings, llm_pb2_grpc.LLMServiceStub)
    try:
        asked: dict[str, Any] = {"max_tokens": 10, "stop": NEVER, "logprobs": True, "top_logprobs": 5}
        # Sampled with a penalty, temperature and top-k: the logprobs stay those of the raw logits.
        sampled: dict[str, Any] = {"temperature": 0.7, "top_k": 20, "repetition_penalty": 1.3, "seed": 3}
        reqs = [  # different prompt lengths: batched together, the shorter rows are left-padded
            request([user(text("draw a red cat"))], adapter="", **asked, **GREEDY),
            request([user(text("what do you see in the picture here?"))], adapter="base", **asked, **GREEDY),
            request([user(text("sing"))], adapter="default", **asked, **sampled),
        ]
        results = await asyncio.gather(*(stream(running.stub, r) for r in reqs))
        prompts = [backend.prepare(convert.generation_request(r, 256, torch.float32, 64)) for r in reqs]
    finally:
        await running.stop()

    tiny = llm_model_dir / "tiny" / "llm"
    base = AutoModelForCausalLM.from_pretrained(str(tiny / "base"), dtype=torch.float32)
    model = PeftModel.from_pretrained(base, str(tiny / "adapters" / "default")).eval()
    for req, prompt, (_, entries, final) in zip(reqs, prompts, results, strict=True):
        check_tokens(llm_tokenizer, entries, final)
        assert final.completion_tokens >= 1 and len(prompt.text_ids) == prompt.length == final.prompt_tokens
        ids = torch.tensor([[*prompt.text_ids, *(e.chosen.token_id for e in entries)]])
        with torch.inference_mode():
            if req.adapter == "base":
                with model.disable_adapter():
                    logits = model(input_ids=ids).logits[0]
            else:
                logits = model(input_ids=ids).logits[0]
        # Row p predicts answer token p: rows prompt_len-1 .. prompt_len+n-2.
        want = torch.log_softmax(logits[prompt.length - 1 : prompt.length - 1 + len(entries)].double(), -1)
        for p, e in enumerate(entries):
            assert_consistent(e, 5)
            if req.sampling.temperature == 0:
                assert e.chosen.token_id == e.top[0].token_id  # greedy: the most likely token
            # fp32 on CPU, batched cached decode vs one full forward: measured at most 2.3e-6 apart
            # (float32 rounding; values near -5); 1e-4 leaves room, a wrong distribution is 1e-2 off.
            assert math.isclose(e.chosen.logprob, float(want[p, e.chosen.token_id]), abs_tol=1e-4)
            best = torch.topk(want[p], 5)
            assert [t.logprob for t in e.top] == pytest.approx(best.values.tolist(), abs=1e-4)
            assert [t.logprob for t in e.top] == pytest.approx([float(want[p, t.token_id]) for t in e.top], abs=1e-4)


async def test_logprobs_stream_with_the_deltas(llm: RunningLLM, llm_tokenizer: Any) -> None:
    msgs = [user(media(rows(7)), text("tell me a story"))]
    req = request(msgs, max_tokens=24, stop=NEVER, logprobs=True, top_logprobs=3, **GREEDY)
    replies, entries, final = await stream(llm.stub, req)
    check_tokens(llm_tokenizer, entries, final)
    if final.finish_reason == STOP:  # EOS (this prompt's greedy answer ends so): listed too, never shown
        assert entries[-1].chosen.token_id == llm_tokenizer.eos_token_id
    assert final.completion_tokens >= 12
    assert sum(1 for r in replies[:-1] if r.logprobs) >= 2  # streamed with the deltas, not all at the end
    assert sum(len(r.logprobs) for r in replies[:-1] if r.delta) >= 12
    for e in entries:
        assert_consistent(e, 3)
        assert e.chosen.token_id == e.top[0].token_id
    # Asking for logprobs changes nothing else.
    req.sampling.logprobs, req.sampling.top_logprobs = False, 0
    replies, entries, plain = await stream(llm.stub, req)
    assert plain.text == final.text and not entries


async def test_logprobs_include_the_stop_string_tokens(llm: RunningLLM, llm_tokenizer: Any) -> None:
    msgs = [user(text("tell me a story"))]
    _, free, full = await stream(llm.stub, request(msgs, max_tokens=40, stop=NEVER, logprobs=True, **GREEDY))
    stop = full.text[4:7]  # known to be in the greedy answer; its tokens are generated, then cut
    _, entries, final = await stream(llm.stub, request(msgs, max_tokens=40, stop=[stop], logprobs=True, **GREEDY))
    assert final.finish_reason == STOP and stop not in final.text and full.text.startswith(final.text)
    assert len(entries) == final.completion_tokens > 0
    chosen = [e.chosen.token_id for e in entries]
    assert chosen == [e.chosen.token_id for e in free[: len(chosen)]]  # the same tokens as without the stop
    assert stop in llm_tokenizer.decode(chosen, skip_special_tokens=True)
    assert all(not e.top for e in entries)  # logprobs without top_logprobs: the chosen token only
    assert [e.chosen.logprob for e in entries] == [e.chosen.logprob for e in free[: len(chosen)]]


async def test_no_logprobs_unless_asked(llm: RunningLLM) -> None:
    replies, entries, final = await stream(
        llm.stub, request([user(text("hello"))], max_tokens=12, stop=NEVER, **GREEDY)
    )
    assert final.completion_tokens == 12 and not entries and all(not r.logprobs for r in replies)


async def test_seeded_sampling_with_logprobs(llm: RunningLLM, llm_tokenizer: Any) -> None:
    def req(logprobs: bool) -> llm_pb2.GenerateRequest:
        sampling: dict[str, Any] = {"logprobs": True, "top_logprobs": 4} if logprobs else {}
        msgs = [user(media(rows(9)), text("surprise me"))]
        return request(msgs, max_tokens=16, stop=NEVER, temperature=1.0, top_p=1.0, seed=11, **sampling)

    # Mixed rows in one batch: only the row that asks gets entries, and nobody's tokens change.
    (_, a, fa), (_, b, fb), (_, none, fn) = await asyncio.gather(
        stream(llm.stub, req(True)), stream(llm.stub, req(True)), stream(llm.stub, req(False))
    )
    check_tokens(llm_tokenizer, a, fa)
    assert fa.text == fb.text == fn.text and not none
    # Seeded: the same tokens and values (batched rows may differ in the last float32 bits).
    assert [(e.chosen.token_id, [t.token_id for t in e.top]) for e in a] == [
        (e.chosen.token_id, [t.token_id for t in e.top]) for e in b
    ]
    assert [e.chosen.logprob for e in a] == pytest.approx([e.chosen.logprob for e in b], abs=1e-5)
    for e in a:
        assert_consistent(e, 4)
    # Sampled, not greedy: somewhere the chosen token is not the most likely one.
    assert any(e.chosen.token_id != e.top[0].token_id for e in a)
