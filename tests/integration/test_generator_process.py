"""``modaverse-generator`` as real processes: ``build-tiny``, then ``serve`` configured by environment."""

from __future__ import annotations

import subprocess
from pathlib import Path

import grpc

from modaverse.local import service_executable
from modaverse_protos.generator.v1 import generator_pb2, generator_pb2_grpc

from .processes import module_help, running


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

    env = {"MODAVERSE_GENERATOR_KIND": "text-to-audio", "MODAVERSE_MAX_QUEUE": "3"}
    with running("generator", tmp_path, env, model_dir=tmp_path) as service:
        with grpc.insecure_channel(service.target) as channel:
            stub = generator_pb2_grpc.GeneratorServiceStub(channel)
            info = stub.Info(generator_pb2.InfoRequest(), timeout=10)
            assert (info.kind, info.model, info.queue_capacity) == ("text-to-audio", str(target), 3)
            request = generator_pb2.GenerateRequest(prompt="a bell", seed=1, steps=2, duration_seconds=0.5)
            events = [r.WhichOneof("event") for r in stub.Generate(request, timeout=60)]
            assert events == ["progress", "progress", "chunk", "done"]
        assert service.stop(60).code == 0


def test_python_dash_m_runs_the_cli() -> None:
    assert "--kind" in module_help("modaverse_generators", "build-tiny")
