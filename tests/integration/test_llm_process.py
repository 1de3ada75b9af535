"""``modaverse-llm serve`` as a real process: metrics, a streamed answer, SIGTERM draining a stream."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from modaverse_protos.llm.v1 import llm_pb2, llm_pb2_grpc

from .llm_fixtures import request, text, user
from .processes import ServiceProcess, running


@pytest.fixture(scope="module")
def llm_process(llm_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    env = {
        "MODAVERSE_GRACE_PERIOD_S": "30",
        "MODAVERSE_MAX_TOKENS_CAP": "1000",
        "MODAVERSE_TORCH_THREADS": "1",  # a tiny model on a shared CPU: 1 thread is many times faster than 2
    }
    logs = tmp_path_factory.mktemp("llm-process")
    with running("llm", logs, env, model_dir=llm_model_dir, metrics=True) as process:
        yield process


def test_stream_and_metrics(llm_process: ServiceProcess) -> None:
    with grpc.insecure_channel(llm_process.target) as channel:
        stub = llm_pb2_grpc.LLMServiceStub(channel)
        replies = list(stub.Generate(request([user(text("hello"))], max_tokens=6, temperature=0.0), timeout=60))
    assert replies[-1].WhichOneof("event") == "final"
    assert "".join(r.delta for r in replies[:-1]) == replies[-1].final.text
    body = llm_process.metrics()
    assert 'modaverse_requests_total{code="OK",method="/modaverse.llm.v1.LLMService/Generate"} 1.0' in body
    assert "modaverse_llm_completion_tokens_total" in body
    assert "modaverse_model_ready 1.0" in body


def test_sigterm_drains_a_running_stream(llm_process: ServiceProcess) -> None:
    long = request([user(text("tell me everything"))], max_tokens=300, stop=["\x00never\x00"], temperature=0.0)
    result: dict[str, object] = {"deltas": 0}
    started = threading.Event()

    def call() -> None:
        with grpc.insecure_channel(llm_process.target) as channel:
            try:
                for reply in llm_pb2_grpc.LLMServiceStub(channel).Generate(long, timeout=120):
                    started.set()
                    if reply.WhichOneof("event") == "final":
                        result["final"] = reply.final
                        result["final_at"] = time.monotonic()
            except grpc.RpcError as error:
                result["error"] = error
            started.set()

    worker = threading.Thread(target=call)
    worker.start()
    assert started.wait(60)
    time.sleep(0.05)
    sigterm_at = llm_process.sigterm()
    worker.join(120)
    assert "error" not in result, result.get("error")
    final = result["final"]
    assert isinstance(final, llm_pb2.Final) and final.completion_tokens >= 1
    assert float(result["final_at"]) > sigterm_at, "the stream ended before SIGTERM; make it longer"  # type: ignore[arg-type]
    stopped = llm_process.stop(60)
    assert stopped.code == 0
    assert "NOT_SERVING" in stopped.output and "llm stopped" in stopped.output
