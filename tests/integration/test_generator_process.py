"""``modaverse-generator`` as real processes: ``build-tiny``, then ``serve`` configured by environment."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import grpc

from modaverse.local import LocalService, service_executable
from modaverse_protos.generator.v1 import generator_pb2, generator_pb2_grpc


def test_build_tiny_then_serve_a_kind_chosen_by_environment(tmp_path: Path) -> None:
    exe = service_executable("modaverse-generator")
    built = subprocess.run(
        [exe, "build-tiny", "--kind", "text-to-audio", "--model-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    target = tmp_path / "tiny" / "generators" / "text-to-audio"
    assert built.stdout.strip() == str(target) and (target / "model_index.json").is_file()
    assert not (tmp_path / "tiny" / "generators" / "text-to-image").exists()  # only the kind asked for

    env = {
        "MODAVERSE_MODEL_DIR": str(tmp_path),
        "MODAVERSE_GENERATOR_KIND": "text-to-audio",
        "MODAVERSE_MAX_QUEUE": "3",
        "HF_HUB_OFFLINE": "1",
    }
    service = LocalService(exe, env=env, log_path=tmp_path / "server.log").start(timeout=120)
    try:
        with grpc.insecure_channel(service.target) as channel:
            stub = generator_pb2_grpc.GeneratorServiceStub(channel)
            info = stub.Info(generator_pb2.InfoRequest(), timeout=10)
            assert (info.kind, info.model, info.queue_capacity) == ("text-to-audio", str(target), 3)
            request = generator_pb2.GenerateRequest(prompt="a bell", seed=1, steps=2, duration_seconds=0.5)
            events = [r.WhichOneof("event") for r in stub.Generate(request, timeout=60)]
            assert events == ["progress", "progress", "chunk", "done"]
        assert service.proc is not None
        service.proc.send_signal(signal.SIGTERM)
        assert service.proc.wait(timeout=60) == 0
    finally:
        service.stop()


def test_python_dash_m_runs_the_cli() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "modaverse_generators", "build-tiny", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        check=True,
    )
    assert "--kind" in out.stdout
