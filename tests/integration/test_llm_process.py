"""``modaverse-llm serve`` as a real process: metrics, a streamed answer, SIGTERM draining a stream."""

from __future__ import annotations

import signal
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from modaverse.local import LocalService, service_executable
from modaverse_protos.llm.v1 import llm_pb2, llm_pb2_grpc

from .in_process import free_port
from .llm_fixtures import fixture_llm_model_dir, request, text, user  # noqa: F401 - pytest fixture


@pytest.fixture(scope="module")
def llm_process(
    llm_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[LocalService, Path, int]]:
    metrics_port = free_port()
    env = {
        "MODAVERSE_MODEL_DIR": str(llm_model_dir),
        "MODAVERSE_METRICS_PORT": str(metrics_port),
        "MODAVERSE_GRACE_PERIOD_S": "30",
        "MODAVERSE_MAX_TOKENS_CAP": "1000",
        "MODAVERSE_TORCH_THREADS": "1",  # a tiny model on a shared CPU: 1 thread is many times faster than 2
    }
    log = tmp_path_factory.mktemp("llm-process") / "llm.log"
    service = LocalService(service_executable("modaverse-llm"), env=env, log_path=log).start(timeout=120)
    try:
        yield service, log, metrics_port
    finally:
        if service.proc is not None and service.proc.poll() is None:
            service.proc.kill()
            service.proc.wait(10)


def test_stream_and_metrics(llm_process: tuple[LocalService, Path, int]) -> None:
    service, _, metrics_port = llm_process
    with grpc.insecure_channel(service.target) as channel:
        stub = llm_pb2_grpc.LLMServiceStub(channel)
        replies = list(stub.Generate(request([user(text("hello"))], max_tokens=6, temperature=0.0), timeout=60))
    assert replies[-1].WhichOneof("event") == "final"
    assert "".join(r.delta for r in replies[:-1]) == replies[-1].final.text
    body = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
    assert 'modaverse_requests_total{code="OK",method="/modaverse.llm.v1.LLMService/Generate"} 1.0' in body
    assert "modaverse_llm_completion_tokens_total" in body
    assert "modaverse_model_ready 1.0" in body


def test_sigterm_drains_a_running_stream(llm_process: tuple[LocalService, Path, int]) -> None:
    service, log, _ = llm_process
    proc = service.proc
    assert proc is not None
    long = request([user(text("tell me everything"))], max_tokens=300, stop=["\x00never\x00"], temperature=0.0)
    result: dict[str, object] = {"deltas": 0}
    started = threading.Event()

    def call() -> None:
        with grpc.insecure_channel(service.target) as channel:
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
    sigterm_at = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    worker.join(120)
    assert "error" not in result, result.get("error")
    final = result["final"]
    assert isinstance(final, llm_pb2.Final) and final.completion_tokens >= 1
    assert float(result["final_at"]) > sigterm_at, "the stream ended before SIGTERM; make it longer"  # type: ignore[arg-type]
    assert proc.wait(60) == 0
    output = log.read_text()
    assert "NOT_SERVING" in output and "llm stopped" in output
