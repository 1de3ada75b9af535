"""``modaverse-encoder serve`` as a real process: metrics, and SIGTERM draining in-flight work."""

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
from modaverse_protos.common.v1 import common_pb2
from modaverse_protos.encoder.v1 import encoder_pb2, encoder_pb2_grpc
from modaverse_runtime import samples

from .in_process import free_port


@pytest.fixture
def encoder_process(model_dir: Path, tmp_path: Path) -> Iterator[tuple[LocalService, Path, int]]:
    metrics_port = free_port()
    env = {
        "MODAVERSE_MODEL_DIR": str(model_dir),
        "MODAVERSE_METRICS_PORT": str(metrics_port),
        "MODAVERSE_GRACE_PERIOD_S": "30",
    }
    log = tmp_path / "encoder.log"
    service = LocalService(service_executable("modaverse-encoder"), env=env, log_path=log).start(timeout=120)
    try:
        yield service, log, metrics_port
    finally:
        if service.proc is not None and service.proc.poll() is None:
            service.proc.kill()
            service.proc.wait(10)


def test_metrics_are_exported(encoder_process: tuple[LocalService, Path, int]) -> None:
    service, _, metrics_port = encoder_process
    target = service.target
    with grpc.insecure_channel(target) as channel:
        stub = encoder_pb2_grpc.EncoderServiceStub(channel)
        media = common_pb2.Media(modality=common_pb2.MODALITY_IMAGE, data=samples.make_image())
        stub.Encode(encoder_pb2.EncodeRequest(media=[media]), timeout=30)
    body = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
    assert 'modaverse_requests_total{code="OK",method="/modaverse.encoder.v1.EncoderService/Encode"} 1.0' in body
    assert 'modaverse_batch_size_count{queue="encoder-image"} 1.0' in body
    assert "modaverse_model_ready 1.0" in body


def test_sigterm_drains_in_flight_request(encoder_process: tuple[LocalService, Path, int]) -> None:
    service, log, _ = encoder_process
    proc, target = service.proc, service.target
    assert proc is not None
    # Enough real work (eight videos, 15 clips each) to still be running when SIGTERM lands.
    video = samples.make_video(seconds=4.0, fps=10, size=160)
    request = encoder_pb2.EncodeRequest(media=[common_pb2.Media(modality=common_pb2.MODALITY_VIDEO, data=video)] * 8)
    result: dict[str, object] = {}

    def call() -> None:
        with grpc.insecure_channel(target) as channel:
            try:
                result["reply"] = encoder_pb2_grpc.EncoderServiceStub(channel).Encode(request, timeout=120)
            except grpc.RpcError as error:
                result["error"] = error

    worker = threading.Thread(target=call)
    worker.start()
    time.sleep(0.5)
    assert worker.is_alive(), "the request finished before SIGTERM; make it heavier"
    proc.send_signal(signal.SIGTERM)
    worker.join(120)
    assert "error" not in result, result.get("error")
    reply = result["reply"]
    assert isinstance(reply, encoder_pb2.EncodeResponse)
    assert len(reply.embeddings) == 8
    assert proc.wait(60) == 0
    output = log.read_text()
    assert "NOT_SERVING" in output
    assert "encoder stopped" in output
