"""Faults under load: a process dies or drains while many chats stream through a real gateway process.

(a) The LLM process (``modaverse-llm``, tiny profile) is SIGKILLed while 32 chats stream from it, then
    restarted on its port: the chats it held end with UNAVAILABLE naming the LLM, chats during the outage
    fail fast the same way, chats after the restart succeed, and every admission slot comes back (the
    gateway's ``modaverse_gateway_chats_in_flight`` returns to 0, and 32 chats at once are all admitted again
    by a gateway whose limit is 32).
(b) The image generator process is SIGKILLed while it runs a full batch (4 rows) with 4 more requests
    queued behind it: each of those 8 chats still gets its text and its audio (another generator process),
    and reports the lost image as an ``InvocationError`` for that invocation, not as a failed chat. 8 chats,
    not 32: a generator takes one batch of 4 and queues 16 (``MODAVERSE_MAX_QUEUE``), so 32 image chats
    would mostly exercise its queue limit and the gateway's handling of busy replicas, not the kill.
(c) The gateway process gets SIGTERM while 32 chats stream: all 32 finish with their whole answer within
    the grace period, new chats are refused (UNAVAILABLE) while they drain, and the process exits 0.

Every service under test is a real process (``tests/integration/processes.py``); the LLM of (b) and (c) is
the scripted one (in this process, on a background loop), so a chat's meta-response is chosen by its text:
the tiny LLM is untrained and writes random words. The chats are short (a few hundred tokens of the tiny LLM,
2-step audio, 64x64 images): the file takes under a minute on 2 cores (24-41 s measured). Deadlines are hang
guards, never latency checks: every call has one, and every wait is bounded far above what the machine needs.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from modaverse import AsyncClient, GenerationOptions, ModaverseError
from modaverse.chat import ResultBuilder
from modaverse.errors import Unavailable
from modaverse.types import ChatEvent, ChatResult, Done, InvocationDone, MetaResponse, Progress, TextDelta

from .gateway_fixtures import tiny_routes
from .processes import ServiceProcess, service_process, started
from .scripted_llm import ScriptedServer

STREAMS = 32  # chats at once, and the gateway's admission limit: one leaked slot sheds the 32nd chat
DEADLINE_S = 120.0  # every chat's deadline (a hang guard: each chat here needs seconds)
GRACE_S = 60.0  # MODAVERSE_GRACE_PERIOD_S of the drained gateway
LONG_TOKENS = 600  # the held chats' budget: they stream for seconds, the kill comes soon after they begin
IMAGE_BATCH = 4  # rows in one pipeline call of the image generator (its default batch_max_items)


@dataclass(eq=False)  # compared by identity: several chats may send the same text
class Chat:
    """One streamed chat: its events with their arrival times, and how it ended."""

    text: str
    events: list[tuple[float, ChatEvent]] = field(default_factory=list)
    error: ModaverseError | None = None
    ended_at: float = 0.0

    def has(self, kind: type[object], index: int | None = None) -> bool:
        """Whether an event of ``kind`` (for invocation ``index``, if given) has arrived."""
        return any(
            isinstance(e, kind) and (index is None or getattr(e, "index", None) == index) for _, e in self.events
        )

    @property
    def result(self) -> ChatResult:
        builder = ResultBuilder()
        for _, event in self.events:
            builder.add(event)
        return builder.result

    @property
    def clean(self) -> bool:
        """Ended with its whole answer: no error, a meta-response whose raw text is every delta, Done."""
        result = self.result
        deltas = "".join(e.text for _, e in self.events if isinstance(e, TextDelta))
        return (
            self.error is None
            and result.meta_response is not None
            and result.done is not None
            and deltas == result.meta_response.raw
            and not result.errors
        )

    def describe(self) -> str:
        if self.error is not None:
            return f"{self.error.code.name}: {self.error.details}"
        return f"events {[type(e).__name__ for _, e in self.events]}"


async def run_chat(client: AsyncClient, chat: Chat, **options: object) -> None:
    try:
        async for event in client.stream(chat.text, timeout=DEADLINE_S, **options):  # type: ignore[arg-type]
            chat.events.append((time.monotonic(), event))
    except ModaverseError as error:
        chat.error = error
    chat.ended_at = time.monotonic()


async def until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"not within {timeout:.0f}s: {what}"
        await asyncio.sleep(0.01)


def metric(process: ServiceProcess, name: str, **labels: str) -> float:
    """One sample of the process's Prometheus text (0 when absent, like an unset gauge)."""
    for family in text_string_to_metric_families(process.metrics()):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


def gateway_env(llm: str, routes: dict[str, str] | None = None) -> dict[str, str]:
    return {
        "MODAVERSE_ENCODER_TARGETS": "127.0.0.1:1",  # no chat here carries media: the encoder is never called
        "MODAVERSE_LLM_TARGETS": llm,
        "MODAVERSE_ROUTES": tiny_routes(routes) if routes else "",
        "MODAVERSE_MAX_CONCURRENT_CHATS": str(STREAMS),
        "MODAVERSE_RETRY_BACKOFF_MS": "20",
        "MODAVERSE_GRACE_PERIOD_S": str(GRACE_S),
    }


def report(title: str, rows: Sequence[tuple[str, object]]) -> None:
    """The figures docs/reliability.md quotes (pytest -s shows them)."""
    print(f"\n{title}: " + "; ".join(f"{k} {v}" for k, v in rows))


# --- (a) the LLM SIGKILLed under 32 streams ---------------------------------------------------------------


async def long_prompts(target: str, wanted: int) -> list[str]:
    """Prompts whose greedy answer from this (random) tiny LLM runs to its token budget: a chat streaming one
    of them is certainly still held by the LLM a moment after its first delta."""
    budget = 200
    candidates = [f"Tell me a long story, number {i}." for i in range(64)]
    async with AsyncClient(target, timeout=DEADLINE_S) as client:
        results: list[ChatResult] = []
        for start in range(0, len(candidates), STREAMS):  # no more at once than the gateway admits
            batch = candidates[start : start + STREAMS]
            results += await asyncio.gather(*(client.chat(p, max_tokens=budget, temperature=0.0) for p in batch))
    chosen = [
        p for p, r in zip(candidates, results, strict=True) if r.done is not None and r.done.completion_tokens == budget
    ]
    assert len(chosen) >= 4, f"only {len(chosen)} of 64 prompts run to {budget} tokens on this tiny LLM"
    return [chosen[i % len(chosen)] for i in range(wanted)]


def test_llm_sigkilled_under_32_streams_fails_them_fast_and_frees_every_slot(
    llm_model_dir: Path, tmp_path: Path
) -> None:
    env = {"MODAVERSE_TORCH_THREADS": "1", "MODAVERSE_MAX_TOKENS_CAP": str(LONG_TOKENS)}
    first = service_process("llm", tmp_path, env, model_dir=llm_model_dir, log_name="llm-1")
    with started(first):
        gateway = service_process("gateway", tmp_path, gateway_env(first.target), metrics=True)
        with started(gateway):
            prompts = asyncio.run(long_prompts(gateway.target, STREAMS))
            chats = [Chat(p) for p in prompts]

            async def kill_while_streaming() -> tuple[float, list[Chat]]:
                async with AsyncClient(gateway.target) as client:
                    tasks = [
                        asyncio.create_task(run_chat(client, c, max_tokens=LONG_TOKENS, temperature=0.0)) for c in chats
                    ]
                    # Most chats streaming (the LLM may still have a few queued: it holds those too).
                    await until(lambda: sum(c.has(TextDelta) for c in chats) >= STREAMS * 3 // 4, 60, "streaming")
                    held = [c for c in chats if not c.has(MetaResponse) and not c.ended_at]
                    first.proc.kill()  # SIGKILL: no drain, every connection to it drops
                    killed_at = time.monotonic()
                    await asyncio.wait_for(asyncio.gather(*tasks), DEADLINE_S + 30)
                    return killed_at, held

            killed_at, held = asyncio.run(kill_while_streaming())
            assert first.proc.wait(10) == -signal.SIGKILL
            # The chats it held end with UNAVAILABLE naming the LLM; any that had its answer before is whole.
            assert len(held) >= STREAMS // 2, f"only {len(held)} chats were streaming when the LLM was killed"
            for chat in chats:
                if chat in held:
                    assert isinstance(chat.error, Unavailable), chat.describe()
                    assert chat.error.details.startswith("llm: "), chat.error.details
                    assert not chat.has(Done)
                else:  # it had its answer before the kill: whole, with the LLM's own token count
                    assert chat.clean, chat.describe()
                    assert chat.result.done is not None and chat.result.done.completion_tokens > 0
            failed_within = max(c.ended_at for c in held) - killed_at
            # Every slot is back: nothing is in flight once the last chat has ended.
            assert metric(gateway, "modaverse_gateway_chats_in_flight") == 0

            async def outage() -> list[tuple[ModaverseError | None, float]]:
                async with AsyncClient(gateway.target) as client:

                    async def one() -> tuple[ModaverseError | None, float]:
                        begun = time.monotonic()
                        try:
                            await client.chat("anyone there?", max_tokens=4, timeout=DEADLINE_S)
                        except ModaverseError as error:
                            return error, time.monotonic() - begun
                        return None, time.monotonic() - begun

                    return await asyncio.gather(*(one() for _ in range(4)))

            down = asyncio.run(outage())
            for error, _ in down:  # nothing listens on the port: the retries run out, the client hears why
                assert isinstance(error, Unavailable) and error.details.startswith("llm: "), error

            second = service_process("llm", tmp_path, env, model_dir=llm_model_dir, port=first.port, log_name="llm-2")
            with started(second):
                assert second.port == first.port

                async def recover() -> tuple[float, list[Chat]]:
                    async with AsyncClient(gateway.target) as client:
                        back = time.monotonic()
                        while True:
                            probe = Chat("hello again")
                            await run_chat(client, probe, max_tokens=4)
                            if probe.error is None:
                                break
                            assert isinstance(probe.error, Unavailable), probe.describe()
                            assert probe.error.details.startswith("llm: "), probe.error.details
                            assert time.monotonic() - back < 60, "the gateway never used the restarted LLM"
                            await asyncio.sleep(0.1)
                        took = time.monotonic() - back
                        after = [Chat(f"Say something short, number {i}.") for i in range(STREAMS)]
                        await asyncio.gather(*(run_chat(client, c, max_tokens=8) for c in after))
                        return took, after

                recovered_in, after = asyncio.run(recover())
                # A leaked slot would shed one of these 32 with RESOURCE_EXHAUSTED (the limit is 32).
                assert all(c.clean for c in after), [c.describe() for c in after if not c.clean]
                assert metric(gateway, "modaverse_gateway_chats_in_flight") == 0
    report(
        "LLM SIGKILLed under load",
        [
            ("chats", len(chats)),
            ("held by the LLM at the kill", len(held)),
            ("UNAVAILABLE", sum(c.error is not None for c in chats)),
            ("messages", sorted({c.error.details for c in chats if c.error is not None})),
            ("whole answers", sum(c.clean for c in chats)),
            ("last held chat failed after", f"{failed_within:.2f}s"),
            ("outage chats UNAVAILABLE", f"{len(down)} in at most {max(t for _, t in down):.2f}s"),
            ("first chat after restart", f"{recovered_in:.2f}s after SERVING"),
            ("32 chats after", f"{sum(c.clean for c in after)} whole"),
        ],
    )


# --- (b) a generator SIGKILLed during a full batch ---------------------------------------------------------


def test_generator_sigkilled_mid_batch_fails_only_that_invocation_of_each_chat(
    model_dir: Path, scripted: ScriptedServer, tmp_path: Path
) -> None:
    image = service_process(
        "generator",
        tmp_path,
        # A batch waits up to 2 s for company, so the 4 chats' images certainly run as one pipeline call.
        {
            "MODAVERSE_GENERATOR_KIND": "text-to-image",
            "MODAVERSE_BATCH_MAX_ITEMS": str(IMAGE_BATCH),
            "MODAVERSE_BATCH_MAX_WAIT_MS": "2000",
        },
        model_dir=model_dir,
        log_name="gen-image",
    )
    audio = service_process(
        "generator", tmp_path, {"MODAVERSE_GENERATOR_KIND": "text-to-audio"}, model_dir=model_dir, log_name="gen-audio"
    )
    with started(image, audio, timeout=240):
        routes = {"image": image.target, "audio": audio.target}
        gateway = service_process("gateway", tmp_path, gateway_env(scripted.target, routes), metrics=True)
        with started(gateway):
            # A full batch running (4 rows, 200 steps: seconds of denoising) and a second one queued behind it.
            chats = [
                Chat(f"Here you go.\nModality: [IMAGE] Prompt: a red circle {i}\nModality: [AUDIO] Prompt: a beep {i}")
                for i in range(2 * IMAGE_BATCH)
            ]
            options = {"image": GenerationOptions(steps=200, seed=1), "audio": GenerationOptions(steps=2, seed=1)}

            async def kill_mid_batch() -> list[Chat]:
                async with AsyncClient(gateway.target) as client:
                    tasks = [asyncio.create_task(run_chat(client, c, generators=options)) for c in chats]

                    def denoising() -> list[Chat]:
                        return [c for c in chats if c.has(Progress, 0)]

                    await until(lambda: len(denoising()) >= IMAGE_BATCH, 120, "a full batch of images denoising")
                    batch = denoising()
                    assert not any(c.has(InvocationDone, 0) for c in chats), "an image finished; make them longer"
                    image.proc.kill()
                    await asyncio.wait_for(asyncio.gather(*tasks), DEADLINE_S + 30)
                    return batch

            batch = asyncio.run(kill_mid_batch())
            assert image.proc.wait(10) == -signal.SIGKILL
            assert len(batch) == IMAGE_BATCH  # one pipeline call at a time: 4 rows denoising together
            for chat in chats:
                assert chat.error is None, chat.describe()  # the chat itself completes ...
                result = chat.result
                assert result.text == "Here you go."
                assert [m.invocation.modality for m in result.media] == ["audio"]  # ... with the other generation
                wav = result.media[0].data
                assert result.media[0].mime_type == "audio/wav" and wav[:4] == b"RIFF" and wav[8:12] == b"WAVE"
                assert len(wav) > 1000  # a header and samples
                (error,) = result.errors  # ... and the lost one reported for its invocation
                assert (error.index, error.code) == (0, "UNAVAILABLE"), error
                assert error.message.startswith("generator image-tiny: "), error.message
                assert result.done is not None and result.done.failed_invocations == 1
            assert metric(gateway, "modaverse_gateway_chats_in_flight") == 0
            assert metric(gateway, "modaverse_gateway_invocations_in_flight", route="image-tiny") == 0
            assert metric(gateway, "modaverse_gateway_invocations_in_flight", route="audio-tiny") == 0
            lost = metric(gateway, "modaverse_gateway_invocations_total", route="image-tiny", outcome="UNAVAILABLE")
            assert lost == len(chats)
    report(
        "image generator SIGKILLed mid-batch",
        [
            ("chats", len(chats)),
            ("denoising in the killed batch", len(batch)),
            ("queued behind it", len(chats) - len(batch)),
            ("chats completed", sum(c.error is None for c in chats)),
            ("audio delivered", sum(len(c.result.media) for c in chats)),
            ("image reported UNAVAILABLE per chat", sum(len(c.result.errors) for c in chats)),
            ("messages", sorted({e.message for c in chats for e in c.result.errors})),
        ],
    )


# --- (c) the gateway drained with SIGTERM under 32 streams -------------------------------------------------


def test_gateway_sigterm_under_32_streams_finishes_them_refuses_new_ones_and_exits_0(
    scripted: ScriptedServer, tmp_path: Path
) -> None:
    gateway = service_process("gateway", tmp_path, gateway_env(scripted.target))
    # "SLOW": the scripted LLM streams 8 characters per 0.2 s, about 4 s for this answer.
    answer = " ".join(["word"] * 30)
    chats = [Chat(f"SLOW Modality: [TEXT] Prompt: {answer}") for _ in range(STREAMS)]
    late: list[tuple[float, Chat]] = []  # new chats sent during the drain, with their start times
    with started(gateway):

        async def drain() -> tuple[float, float]:
            async with AsyncClient(gateway.target) as client:
                tasks = [asyncio.create_task(run_chat(client, c)) for c in chats]
                await until(lambda: all(c.events or c.ended_at for c in chats), 60, "every chat streaming")
                sigterm_at = gateway.sigterm()
                await asyncio.to_thread(gateway.wait_for_output, "shutting down: NOT_SERVING")
                while not all(c.ended_at for c in chats):
                    async with AsyncClient(gateway.target) as fresh:  # a new client: a new connection
                        probe = Chat("Modality: [TEXT] Prompt: too late?")
                        late.append((time.monotonic(), probe))
                        await run_chat(fresh, probe)
                    await asyncio.sleep(0.05)
                await asyncio.wait_for(asyncio.gather(*tasks), DEADLINE_S)
                code = await asyncio.to_thread(gateway.proc.wait, GRACE_S + 30)
                assert code == 0
                return sigterm_at, time.monotonic()

        sigterm_at, exited_at = asyncio.run(drain())
        stopped = gateway.stop(10)

    for chat in chats:
        assert chat.clean, chat.describe()
        assert chat.result.text == answer
    last_done = max(c.ended_at for c in chats)
    assert min(c.ended_at for c in chats) > sigterm_at, "a chat ended before SIGTERM; make them longer"
    assert stopped.code == 0 and "gateway stopped" in stopped.output
    assert exited_at - sigterm_at < GRACE_S
    # New chats are refused while the old ones drain; one sent in the first moment (the drain delay, when
    # the port is still open) may be answered, but never cut off: each is whole or refused with UNAVAILABLE.
    refused = [(at, c) for at, c in late if c.error is not None]
    assert refused and refused[0][0] < last_done, [c.describe() for _, c in late]
    for at, chat in late:
        assert chat.clean or isinstance(chat.error, Unavailable), chat.describe()
        assert at < refused[0][0] or not chat.clean, "a chat was admitted after the gateway began refusing"
    report(
        "gateway SIGTERM under load",
        [
            ("chats", len(chats)),
            ("whole answers", sum(c.clean for c in chats)),
            ("last chat done after SIGTERM", f"{last_done - sigterm_at:.2f}s"),
            ("exit 0 after SIGTERM", f"{exited_at - sigterm_at:.2f}s"),
            ("new chats during the drain", f"{len(late)} sent, {len(refused)} refused UNAVAILABLE"),
        ],
    )
