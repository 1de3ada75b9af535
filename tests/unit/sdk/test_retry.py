"""The SDK's retry policy against a real gRPC server that answers as each test scripts it: a call refused
(RESOURCE_EXHAUSTED, UNAVAILABLE) before its first event is tried again, with backoff, up to
``max_attempts``; once an event has arrived, or for any other status, the error is the caller's."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator
from concurrent import futures
from dataclasses import dataclass
from typing import Any

import grpc
import pytest

from modaverse import AsyncClient, ChatEvent, Client, ResourceExhausted, RetryPolicy, Unavailable
from modaverse.cli import main
from modaverse.errors import InvalidArgument, ModaverseError
from modaverse.retry import Attempts
from modaverse_protos.common.v1 import common_pb2
from modaverse_protos.gateway.v1 import gateway_pb2, gateway_pb2_grpc

BUSY = grpc.StatusCode.RESOURCE_EXHAUSTED
DOWN = grpc.StatusCode.UNAVAILABLE
FAST = RetryPolicy(max_attempts=3, initial_backoff_s=0.001, max_backoff_s=0.002)


@dataclass(frozen=True)
class Step:
    """One answer: ``events`` events of a chat, then ``code`` (None: the rest of the chat, then OK)."""

    code: grpc.StatusCode | None = None
    events: int = 0


OK = Step()
EVENTS = [
    gateway_pb2.ChatEvent(text_delta=gateway_pb2.TextDelta(text="hel")),
    gateway_pb2.ChatEvent(meta_response=gateway_pb2.MetaResponse(raw="hello", answer="hello", parsed=True)),
    gateway_pb2.ChatEvent(done=gateway_pb2.Done(elapsed_seconds=0.5)),
]


class ScriptedGateway(gateway_pb2_grpc.GatewayServiceServicer):
    """Answers each call with the next step of ``script`` (OK once it is empty); records the methods called."""

    def __init__(self) -> None:
        self.script: list[Step] = []
        self.calls: list[str] = []
        self._lock = threading.Lock()

    def _next(self, method: str) -> Step:
        with self._lock:
            self.calls.append(method)
            return self.script.pop(0) if self.script else OK

    def _events(self, method: str, context: grpc.ServicerContext) -> Iterator[gateway_pb2.ChatEvent]:
        step = self._next(method)
        yield from EVENTS[: step.events]
        if step.code is not None:
            context.abort(step.code, f"scripted {step.code.name}")
        yield from EVENTS[step.events :]

    def Chat(self, request: Any, context: grpc.ServicerContext) -> Iterator[gateway_pb2.ChatEvent]:
        yield from self._events("Chat", context)

    def Generate(self, request: Any, context: grpc.ServicerContext) -> Iterator[gateway_pb2.ChatEvent]:
        yield from self._events("Generate", context)

    def ListModels(self, request: Any, context: grpc.ServicerContext) -> gateway_pb2.ListModelsResponse:
        step = self._next("ListModels")
        if step.code is not None:
            context.abort(step.code, f"scripted {step.code.name}")
        return gateway_pb2.ListModelsResponse(generators=[gateway_pb2.ModelRoute(model="sd15", is_default=True)])

    def Embed(self, request: gateway_pb2.EmbedRequest, context: grpc.ServicerContext) -> gateway_pb2.EmbedResponse:
        step = self._next("Embed")
        if step.code is not None:
            context.abort(step.code, f"scripted {step.code.name}")
        vector = common_pb2.Tensor(dtype=common_pb2.DTYPE_FLOAT32, shape=[2], data=b"\0" * 8)
        return gateway_pb2.EmbedResponse(embeddings=[vector] * len(request.items), encoder_id="e", encoder_model="m")


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[ScriptedGateway, str]]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    gateway = ScriptedGateway()
    gateway_pb2_grpc.add_GatewayServiceServicer_to_server(gateway, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield gateway, f"127.0.0.1:{port}"
    server.stop(0)


@pytest.fixture
def gateway(served: tuple[ScriptedGateway, str]) -> ScriptedGateway:
    served[0].script, served[0].calls = [], []
    return served[0]


@pytest.fixture
def target(served: tuple[ScriptedGateway, str]) -> str:
    return served[1]


@pytest.fixture
async def aclient(target: str) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(target, timeout=30, retry=FAST) as client:
        yield client


@pytest.fixture
def client(target: str) -> Iterator[Client]:
    with Client(target, timeout=30, retry=FAST) as client:
        yield client


@pytest.mark.parametrize("code", [BUSY, DOWN])
async def test_async_chat_refused_before_its_first_event_is_tried_again(
    code: grpc.StatusCode, gateway: ScriptedGateway, aclient: AsyncClient
) -> None:
    gateway.script = [Step(code), Step(code)]
    result = await aclient.chat("hi")
    assert gateway.calls == ["Chat"] * 3
    assert result.text == "hello" and result.done is not None


@pytest.mark.parametrize("code", [BUSY, DOWN])
def test_sync_chat_and_stream_refused_before_their_first_event_are_tried_again(
    code: grpc.StatusCode, gateway: ScriptedGateway, client: Client
) -> None:
    gateway.script = [Step(code)]
    assert client.chat("hi").text == "hello"
    gateway.script = [Step(code)]
    events = list(client.chat("hi", stream=True))
    assert len(events) == 3
    assert gateway.calls == ["Chat"] * 4


async def test_unavailable_after_the_first_event_is_not_tried_again(
    gateway: ScriptedGateway, aclient: AsyncClient
) -> None:
    gateway.script = [Step(DOWN, events=1)]
    received: list[ChatEvent] = []

    async def read() -> None:
        async for event in aclient.stream("hi"):
            received.append(event)

    with pytest.raises(Unavailable, match="scripted UNAVAILABLE"):
        await read()
    assert len(received) == 1 and gateway.calls == ["Chat"]


def test_sync_unavailable_after_the_first_event_is_not_tried_again(gateway: ScriptedGateway, client: Client) -> None:
    gateway.script = [Step(DOWN, events=1)]
    received: list[ChatEvent] = []

    def read() -> None:
        for event in client.chat("hi", stream=True):
            received.append(event)

    with pytest.raises(Unavailable, match="scripted UNAVAILABLE"):
        read()
    assert len(received) == 1 and gateway.calls == ["Chat"]


@pytest.mark.parametrize(
    "code",
    [grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.INTERNAL],
)
async def test_other_statuses_are_never_tried_again(
    code: grpc.StatusCode, gateway: ScriptedGateway, aclient: AsyncClient
) -> None:
    gateway.script = [Step(code)]
    with pytest.raises(ModaverseError) as raised:
        await aclient.chat("hi")
    assert raised.value.code == code and gateway.calls == ["Chat"]


async def test_after_max_attempts_the_last_error_is_raised(gateway: ScriptedGateway, aclient: AsyncClient) -> None:
    gateway.script = [Step(BUSY), Step(DOWN), Step(BUSY), Step(BUSY)]
    with pytest.raises(ResourceExhausted):
        await aclient.chat("hi")
    assert gateway.calls == ["Chat"] * 3


async def test_generate_and_list_models_are_tried_again_too(
    gateway: ScriptedGateway, aclient: AsyncClient, client: Client
) -> None:
    gateway.script = [Step(BUSY)]
    assert (await aclient.generate("image", "a red circle")).done is not None
    gateway.script = [Step(DOWN)]
    assert client.generate("image", "a red circle").done is not None
    gateway.script = [Step(DOWN)]
    assert [r.model for r in await aclient.list_models()] == ["sd15"]
    gateway.script = [Step(BUSY)]
    assert [r.model for r in client.list_models()] == ["sd15"]
    gateway.script = [Step(grpc.StatusCode.INVALID_ARGUMENT)]
    with pytest.raises(InvalidArgument):
        client.list_models()
    assert gateway.calls == ["Generate"] * 4 + ["ListModels"] * 5


async def test_embed_is_tried_again_as_a_unary_call(
    gateway: ScriptedGateway, aclient: AsyncClient, client: Client
) -> None:
    gateway.script = [Step(BUSY), Step(DOWN)]
    assert (await aclient.embed(["a", "b"])).texts.shape == (2, 2)
    gateway.script = [Step(DOWN)]
    assert client.embed(images=[b"png"]).images.shape == (1, 2)
    gateway.script = [Step(DOWN)] * 3  # max_attempts: 3
    with pytest.raises(Unavailable, match="scripted UNAVAILABLE"):
        client.embed(["a"])
    gateway.script = [Step(grpc.StatusCode.INVALID_ARGUMENT)]
    with pytest.raises(InvalidArgument):
        await aclient.embed(["a"])
    assert gateway.calls == ["Embed"] * 9


async def test_no_retry_policy_tries_once(gateway: ScriptedGateway, target: str) -> None:
    for retry in (None, RetryPolicy(max_attempts=1)):
        gateway.script = [Step(BUSY)]
        async with AsyncClient(target, timeout=30, retry=retry) as aclient:
            with pytest.raises(ResourceExhausted):
                await aclient.chat("hi")
    assert gateway.calls == ["Chat"] * 2


async def test_the_default_policy_retries_twice(gateway: ScriptedGateway, target: str) -> None:
    gateway.script = [Step(BUSY), Step(DOWN)]
    async with AsyncClient(target, timeout=30) as aclient:
        assert (await aclient.chat("hi")).text == "hello"
    assert gateway.calls == ["Chat"] * 3


async def test_no_retry_when_the_pause_would_outlast_the_timeout(gateway: ScriptedGateway, target: str) -> None:
    slow = RetryPolicy(max_attempts=5, initial_backoff_s=60, max_backoff_s=60, jitter=0)
    gateway.script = [Step(BUSY)]
    async with AsyncClient(target, timeout=30, retry=slow) as aclient:
        with pytest.raises(ResourceExhausted):
            await aclient.chat("hi")
    assert gateway.calls == ["Chat"]


def test_each_try_gets_the_time_left_of_the_call() -> None:
    attempts = Attempts(FAST, timeout=30)
    first = attempts.timeout()
    second = attempts.timeout()
    assert first is not None and second is not None and 0 < second <= first <= 30
    assert Attempts(FAST, timeout=None).timeout() is None


def test_backoff_doubles_up_to_the_longest_less_jitter() -> None:
    policy = RetryPolicy(initial_backoff_s=0.1, max_backoff_s=0.5, jitter=0.5)
    for retry, full in [(1, 0.1), (2, 0.2), (3, 0.4), (4, 0.5), (9, 0.5)]:
        pauses = [policy.backoff(retry) for _ in range(50)]
        assert all(full / 2 <= p <= full for p in pauses)
        assert len(set(pauses)) > 1  # jittered
    assert RetryPolicy(jitter=0).backoff(2) == 0.4


@pytest.mark.parametrize(
    "kwargs",
    [{"max_attempts": 0}, {"initial_backoff_s": -1}, {"initial_backoff_s": 3, "max_backoff_s": 1}, {"jitter": 2}],
)
def test_a_bad_policy_is_a_value_error(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="must"):
        RetryPolicy(**kwargs)


def test_cli_retries_flag(gateway: ScriptedGateway, target: str, capsys: pytest.CaptureFixture[str]) -> None:
    gateway.script = [Step(DOWN)]
    with pytest.raises(SystemExit) as exit_:
        main(["models", "--target", target, "--retries", "0"])
    assert exit_.value.code == 2 and "scripted UNAVAILABLE" in capsys.readouterr().err
    gateway.script = [Step(DOWN), Step(BUSY)]
    with pytest.raises(SystemExit) as exit_:
        main(["models", "--target", target])  # the default: 2 retries
    assert exit_.value.code == 0 and "sd15" in capsys.readouterr().out
    assert gateway.calls == ["ListModels"] * 4
