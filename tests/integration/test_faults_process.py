"""Process-level faults: SIGTERM drains (generator, gateway) and a generator SIGKILLed and restarted.

Generators and the gateway run as real ``modaverse-<svc> serve`` processes; the scripted LLM and the
gateway of the SIGKILL test run in this process on a background event loop, so the tests themselves
are plain blocking code (signals, ``proc.wait``, the sync SDK client).
"""

from __future__ import annotations

import io
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from PIL import Image

from modaverse import Client, GenerationOptions
from modaverse.chat import ResultBuilder
from modaverse.types import ChatEvent, ChatResult, Done, MetaResponse, Progress, TextDelta
from modaverse_protos.generator.v1 import generator_pb2, generator_pb2_grpc
from modaverse_runtime.server import ModaverseServer

from . import gateway_fixtures
from .in_process import BackgroundLoop
from .processes import ServiceProcess, Stopped, running, service_process
from .scripted_llm import ScriptedServer

GRACE_S = 60.0  # MODAVERSE_GRACE_PERIOD_S of every process here: far above any drain on a busy 2-core machine
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVING = health_pb2.HealthCheckResponse.SERVING
FAST = {"image": GenerationOptions(steps=2)}


@dataclass
class GeneratorSlot:
    """One text-to-image generator port. A test may kill the process; the next one binds the same port."""

    model_dir: Path
    logs: Path
    port: int = 0
    service: ServiceProcess | None = None
    starts: int = 0

    def start(self) -> ServiceProcess:
        if self.service is not None:
            self.service.kill()  # one process per slot; a dead one still holds its log file open
        self.starts += 1
        env = {"MODAVERSE_GENERATOR_KIND": "text-to-image", "MODAVERSE_GRACE_PERIOD_S": str(GRACE_S)}
        log_name = f"generator-{self.starts}"
        self.service = service_process(
            "generator", self.logs, env, model_dir=self.model_dir, port=self.port, log_name=log_name
        )
        self.service.start(timeout=240)
        self.port = self.service.port
        return self.service

    def running(self) -> ServiceProcess:
        if self.service is None or not self.service.alive:
            return self.start()
        return self.service


@pytest.fixture(scope="module")
def slot(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GeneratorSlot]:
    holder = GeneratorSlot(model_dir, tmp_path_factory.mktemp("generator-logs"))
    try:
        yield holder
    finally:
        if holder.service is not None:
            holder.service.kill()


class HealthWatch:
    """``Health/Watch`` on its own channel, read in a thread: the server pushes NOT_SERVING the moment it
    starts draining, while a ``Check`` sent after SIGTERM finds the port already closed. Stops reading at
    NOT_SERVING, so the open stream does not hold the drain for the whole grace period."""

    def __init__(self, target: str) -> None:
        self.channel = grpc.insecure_channel(target)
        self.call = health_pb2_grpc.HealthStub(self.channel).Watch(health_pb2.HealthCheckRequest(), timeout=300)
        self.events: list[tuple[float, int]] = []
        self.error: grpc.RpcError | None = None
        self.first = threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            for reply in self.call:
                self.events.append((time.monotonic(), int(reply.status)))
                self.first.set()
                if reply.status == NOT_SERVING:
                    self.call.cancel()
                    return
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.CANCELLED:
                self.error = error
        self.first.set()

    def describe(self) -> str:
        names = [health_pb2.HealthCheckResponse.ServingStatus.Name(s) for _, s in self.events]
        error = f"{self.error.code().name}: {self.error.details()}" if self.error is not None else "none"
        return f"Health/Watch got {names}, error {error}"

    def close(self) -> None:
        self.call.cancel()
        self.thread.join(10)
        self.channel.close()


def sigterm_and_drain(service: ServiceProcess, worker: threading.Thread) -> tuple[float, list[str], Stopped, float]:
    """SIGTERM with ``worker``'s call in flight; returns (signal time, health checks, exit, exit time)."""
    sigterm_at = service.sigterm()
    service.wait_for_output("shutting down: NOT_SERVING")  # the signal has been handled ...
    checks = poll_health(service.target, worker.is_alive)  # ... from here on no probe may see SERVING
    worker.join(240)
    stopped = service.stop(GRACE_S)
    return sigterm_at, checks, stopped, time.monotonic()


def poll_health(target: str, while_: Callable[[], bool]) -> list[str]:
    """Health/Check on a fresh channel every 50 ms while ``while_()``: the statuses (or error codes) seen."""
    seen: list[str] = []
    while while_():
        with grpc.insecure_channel(target) as channel:
            try:
                reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
                seen.append(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))
            except grpc.RpcError as error:
                seen.append(error.code().name)
        time.sleep(0.05)
    return seen


def result_of(events: list[ChatEvent]) -> ChatResult:
    builder = ResultBuilder()
    for event in events:
        builder.add(event)
    return builder.result


async def start_gateway(llm: str, image: str) -> ModaverseServer:
    return await gateway_fixtures.start_gateway(
        "127.0.0.1:1",  # text-only chats never call the encoder
        llm,
        {"image": image},
        retry_attempts=3,
        retry_backoff_ms=10,
        # The default cool-down: with one replica the cooling replica is still tried (ReplicaSet.order),
        # so it does not keep the gateway off a generator that came back.
        unhealthy_cooldown_s=5.0,
    )


def test_generator_sigkilled_mid_stream_then_restarted_on_the_same_port(
    background: BackgroundLoop, scripted: ScriptedServer, slot: GeneratorSlot
) -> None:
    first = slot.running()
    port = first.port
    gateway = background.run(start_gateway(scripted.target, first.target))
    client = Client(f"127.0.0.1:{gateway.port}", timeout=120)
    text = "Here it is.\nModality: [IMAGE] Prompt: a red circle"
    try:
        # 200 steps: the generator is certainly still denoising when its first Progress reaches us.
        events: list[ChatEvent] = []
        for event in client.chat(text, stream=True, generators={"image": GenerationOptions(steps=200)}):
            events.append(event)
            if isinstance(event, Progress) and first.alive:
                first.proc.kill()  # SIGKILL: no drain, the connection just drops
        assert first.proc.wait(10) == -signal.SIGKILL
        killed = result_of(events)
        assert killed.text == "Here it is."  # the chat itself completes ...
        assert killed.media == []
        assert [(e.index, e.code) for e in killed.errors] == [(0, "UNAVAILABLE")]  # ... with the invocation failed
        assert isinstance(events[-1], Done) and events[-1].failed_invocations == 1

        # Nothing listens on the port now: the retries run out quickly and again only the invocation fails.
        down = client.chat(text, generators=FAST)
        assert [(e.index, e.code) for e in down.errors] == [(0, "UNAVAILABLE")]
        assert down.done is not None and down.text == "Here it is."

        # A new process on the same port. The gateway, never restarted, reconnects on its own (its own
        # health view turns healthy), and the next chat's invocation runs on the new process.
        second = slot.start()
        assert second.port == port
        back = time.monotonic()
        while not all(route.healthy for route in client.list_models()):
            assert time.monotonic() - back < 90, "the gateway never saw the restarted generator"
            time.sleep(0.1)
        print(f"gateway saw the restarted generator healthy {time.monotonic() - back:.2f}s after it was SERVING")
        up = client.chat(text, generators=FAST)
        assert up.errors == []
        (media,) = up.media
        assert media.mime_type == "image/png"
        assert Image.open(io.BytesIO(media.data)).size == (64, 64)  # the tiny profile's default size
    finally:
        client.close()
        background.run(gateway.stop(grace=1))


@dataclass
class StreamRecord:
    started: threading.Event = field(default_factory=threading.Event)
    progress: int = 0
    total_steps: int = 0
    chunks: list[generator_pb2.Chunk] = field(default_factory=list)
    done: generator_pb2.Done | None = None
    done_at: float = 0.0
    error: grpc.RpcError | None = None


def test_generator_sigterm_drains_a_running_stream(slot: GeneratorSlot) -> None:
    service = slot.running()
    watch = HealthWatch(service.target)
    record = StreamRecord()
    # 120 steps of the tiny SD pipeline take seconds; SIGTERM lands right after the first one.
    request = generator_pb2.GenerateRequest(prompt="a blue square", seed=3, steps=120)

    def generate() -> None:
        with grpc.insecure_channel(service.target) as channel:
            try:
                for reply in generator_pb2_grpc.GeneratorServiceStub(channel).Generate(request, timeout=240):
                    record.started.set()
                    kind = reply.WhichOneof("event")
                    if kind == "progress":
                        record.progress += 1
                        record.total_steps = reply.progress.total_steps
                    elif kind == "chunk":
                        record.chunks.append(reply.chunk)
                    elif kind == "done":
                        record.done, record.done_at = reply.done, time.monotonic()
            except grpc.RpcError as error:
                record.error = error
            record.started.set()

    worker = threading.Thread(target=generate)
    try:
        assert watch.first.wait(30)
        worker.start()
        assert record.started.wait(120)
        sigterm_at, checks, stopped, exited_at = sigterm_and_drain(service, worker)
    finally:
        watch.close()
        if worker.ident is not None:
            worker.join(10)

    assert record.error is None, record.error
    assert record.done is not None and record.done_at > sigterm_at, "the stream ended before SIGTERM; make it longer"
    assert record.progress == record.total_steps > 0
    data = b"".join(chunk.data for chunk in record.chunks)
    assert len(data) == record.done.total_bytes == record.chunks[-1].total_bytes
    assert Image.open(io.BytesIO(data)).size == (record.done.width, record.done.height)
    assert stopped.code == 0 and exited_at - sigterm_at < GRACE_S
    assert "generator-text-to-image stopped" in stopped.output
    assert checks and set(checks) <= {"NOT_SERVING", "UNAVAILABLE"}, checks
    assert [status for _, status in watch.events] == [SERVING, NOT_SERVING], watch.describe()
    assert sigterm_at < watch.events[1][0] < record.done_at, "health must flip before the drained stream ends"


def test_gateway_sigterm_drains_a_running_chat(scripted: ScriptedServer, tmp_path: Path) -> None:
    env = {
        # Readiness needs neither the encoder nor any generator (routes load, model names are best effort),
        # and a text-only chat never calls them: only the LLM is real.
        "MODAVERSE_ENCODER_TARGETS": "127.0.0.1:1",
        "MODAVERSE_LLM_TARGETS": scripted.target,
        "MODAVERSE_ROUTES": "",
        "MODAVERSE_RETRY_BACKOFF_MS": "10",
        "MODAVERSE_GRACE_PERIOD_S": str(GRACE_S),
    }
    with running("gateway", tmp_path, env) as gateway:
        watch = HealthWatch(gateway.target)
        # "SLOW": the scripted LLM streams one 8-character delta per 0.2 s, about 3 s for this answer.
        answer = " ".join(["word"] * 20)
        timed: list[tuple[float, ChatEvent]] = []
        failure: list[BaseException] = []
        first = threading.Event()

        def chat() -> None:
            try:
                with Client(gateway.target, timeout=120) as client:
                    for event in client.chat(f"SLOW Modality: [TEXT] Prompt: {answer}", stream=True):
                        timed.append((time.monotonic(), event))
                        first.set()
            except BaseException as exc:
                failure.append(exc)
            first.set()

        worker = threading.Thread(target=chat)
        try:
            assert watch.first.wait(30)
            worker.start()
            assert first.wait(60)
            sigterm_at, checks, stopped, exited_at = sigterm_and_drain(gateway, worker)
        finally:
            watch.close()
            if worker.ident is not None:
                worker.join(10)

    assert failure == [], failure
    events = [event for _, event in timed]
    assert isinstance(events[0], TextDelta)
    meta = next(e for e in events if isinstance(e, MetaResponse))
    assert meta.answer == answer
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == meta.raw
    done_at, done = timed[-1]
    assert isinstance(done, Done) and done.failed_invocations == 0
    assert done_at > sigterm_at, "the chat ended before SIGTERM; make it longer"
    assert stopped.code == 0 and exited_at - sigterm_at < GRACE_S
    assert "gateway stopped" in stopped.output
    assert checks and set(checks) <= {"NOT_SERVING", "UNAVAILABLE"}, checks
    assert [status for _, status in watch.events] == [SERVING, NOT_SERVING], watch.describe()
    assert sigterm_at < watch.events[1][0] < done_at, "health must flip before the drained chat ends"
