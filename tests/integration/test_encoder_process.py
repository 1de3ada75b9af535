"""``modaverse-encoder serve`` as a real process: metrics, and SIGTERM draining in-flight work."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from modaverse_protos.common.v1 import common_pb2
from modaverse_protos.encoder.v1 import encoder_pb2, encoder_pb2_grpc
from modaverse_runtime import samples

from .processes import ServiceProcess, running


@pytest.fixture
def encoder_process(model_dir: Path, tmp_path: Path) -> Iterator[ServiceProcess]:
    env = {"MODAVERSE_GRACE_PERIOD_S": "30"}
    with running("encoder", tmp_path, env, model_dir=model_dir, metrics=True) as process:
        yield process


def test_metrics_are_exported(encoder_process: ServiceProcess) -> None:
    with grpc.insecure_channel(encoder_process.target) as channel:
        stub = encoder_pb2_grpc.EncoderServiceStub(channel)
        media = common_pb2.Media(modality=common_pb2.MODALITY_IMAGE, data=samples.make_image())
        stub.Encode(encoder_pb2.EncodeRequest(media=[media]), timeout=30)
    body = encoder_process.metrics()
    assert 'modaverse_requests_total{code="OK",method="/modaverse.encoder.v1.EncoderService/Encode"} 1.0' in body
    assert 'modaverse_batch_size_count{queue="encoder-image"} 1.0' in body
    assert "modaverse_model_ready 1.0" in body


def test_sigterm_drains_in_flight_request(encoder_process: ServiceProcess) -> None:
    target = encoder_process.target
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
    encoder_process.sigterm()
    worker.join(120)
    assert "error" not in result, result.get("error")
    reply = result["reply"]
    assert isinstance(reply, encoder_pb2.EncodeResponse)
    assert len(reply.embeddings) == 8
    stopped = encoder_process.stop(60)
    assert stopped.code == 0
    assert "NOT_SERVING" in stopped.output
    assert "encoder stopped" in stopped.output
