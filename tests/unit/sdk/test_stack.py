"""``modaverse up`` / the demo's local stack with the web front door: the orchestration, with stand-in processes
(tests/integration/test_web_local.py runs the real ``modaverse-web``)."""

from __future__ import annotations

import signal
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import pytest

from modaverse import local, stack
from modaverse.cli import main


class FakeProc:
    def __init__(self) -> None:
        self.returncode: int | None = None

    def poll(self) -> int | None:
        return self.returncode


class FakeService:
    """Stands in for LocalService: records what happens to it, in one shared log."""

    events: ClassVar[list[str]] = []
    ports = iter(range(41000, 42000))

    def __init__(self, executable: str, *, args: Sequence[str] = (), env: object = None, port: int = 0, **_: object):
        self.executable = Path(executable).name
        self.args = list(args)
        self.env = env
        self.requested_port = port
        self.host = "127.0.0.1"
        self.port = 0
        self.proc: FakeProc | None = None
        self.name = self.executable + (
            f"[{env['MODAVERSE_GENERATOR_KIND']}]"
            if isinstance(env, dict) and "MODAVERSE_GENERATOR_KIND" in env
            else ""
        )

    @property
    def target(self) -> str:
        return f"{self.host}:{self.port}"

    def launch(self) -> FakeService:
        self.proc = FakeProc()
        self.events.append(f"launch {self.name}")
        return self

    def wait_ready(self, timeout: float = 300.0) -> FakeService:
        self.port = self.requested_port or next(self.ports)
        self.events.append(f"ready {self.name}")
        return self

    def start(self, timeout: float = 300.0) -> FakeService:
        return self.launch().wait_ready(timeout)

    def stop(self, timeout: float = 60.0) -> int:
        self.events.append(f"stop {self.name}")
        if self.proc is not None and self.proc.returncode is None:
            self.proc.returncode = 0
        return 0


class FakeWeb(FakeService):
    fail_with: Exception | None = None
    created: ClassVar[list[FakeWeb]] = []

    def __init__(self, executable: str, *, gateway: str, **kwargs: object) -> None:
        super().__init__(executable, args=["--gateway", gateway], **kwargs)  # type: ignore[arg-type]
        self.gateway = gateway
        self.log_path = kwargs.get("log_path")
        FakeWeb.created.append(self)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    def wait_ready(self, timeout: float = 300.0) -> FakeService:
        if self.fail_with is not None:
            raise self.fail_with
        return super().wait_ready(timeout)


@pytest.fixture
def fakes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every service "installed" and replaced by a stand-in; returns the event log."""
    FakeService.events = []
    FakeWeb.fail_with = None
    FakeWeb.created = []
    monkeypatch.setattr(local, "find_service_executable", lambda name: f"/venv/bin/{name}")
    monkeypatch.setattr(stack, "LocalService", FakeService)
    monkeypatch.setattr(stack, "LocalWebService", FakeWeb)
    return FakeService.events


def without_web(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        local, "find_service_executable", lambda name: None if name == "modaverse-web" else f"/bin/{name}"
    )


def test_the_web_front_door_starts_last_pointed_at_the_gateway_and_stops_first(
    fakes: list[str], tmp_path: Path
) -> None:
    running = stack.start_stack(log_dir=tmp_path, web_port=8080)
    assert running.web is not None and running.web_skipped == ""
    web = FakeWeb.created[0]
    assert web.gateway == running.target and web.requested_port == 8080
    assert web.log_path == tmp_path / "web.log"
    assert running.web_url == "http://127.0.0.1:8080/"
    assert fakes.index("ready modaverse-gateway") < fakes.index("launch modaverse-web")
    assert stack.web_lines(running) == [
        "playground: http://127.0.0.1:8080/  (OpenAI-compatible API: http://127.0.0.1:8080/v1)"
    ]
    fakes.clear()
    running.stop()
    assert fakes[:2] == ["stop modaverse-web", "stop modaverse-gateway"]
    assert len(fakes) == 8  # and the six backends


def test_without_the_web_package_the_stack_starts_and_says_the_playground_is_skipped(
    fakes: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    without_web(monkeypatch)
    running = stack.start_stack(log_dir=tmp_path, web_port=8080)
    assert running.web is None and running.web_url is None and not FakeWeb.created
    assert "ready modaverse-gateway" in fakes
    assert stack.web_lines(running) == [
        "playground: skipped, modaverse-web is not installed (pip install ./services/web, or make install)"
    ]
    assert "stop modaverse-web" not in fakes


def test_no_web_port_means_no_web_front_door_and_nothing_said(fakes: list[str], tmp_path: Path) -> None:
    running = stack.start_stack(log_dir=tmp_path)  # what the benchmarks and older callers get
    assert running.web is None and running.web_skipped == "" and stack.web_lines(running) == []
    assert not FakeWeb.created


def test_a_web_front_door_that_does_not_start_is_reported_and_the_stack_runs_on(
    fakes: list[str], tmp_path: Path
) -> None:
    FakeWeb.fail_with = RuntimeError("/venv/bin/modaverse-web exited with 1:\nOSError: [Errno 98] Address in use")
    running = stack.start_stack(log_dir=tmp_path, web_port=8080)
    assert running.web is None
    assert running.web_skipped == f"it did not start (OSError: [Errno 98] Address in use; see {tmp_path / 'web.log'})"
    assert "stop modaverse-web" in fakes  # cleaned up
    assert not any(e.startswith("stop") and "web" not in e for e in fakes)  # the rest keeps running
    assert stack.web_lines(running)[0].startswith("playground: skipped, it did not start")


def test_modaverse_up_prints_the_playground_and_stops_everything_when_one_exits(
    fakes: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    real_start = stack.start_stack

    def start_and_crash_the_web(*args: object, **kwargs: object) -> stack.Stack:
        running = real_start(*args, **kwargs)  # type: ignore[arg-type]
        assert running.web is not None and running.web.proc is not None
        running.web.proc.returncode = 1  # seen by the watch loop at once
        return running

    monkeypatch.setattr(stack, "start_stack", start_and_crash_the_web)
    monkeypatch.setattr(signal, "signal", lambda *_: None)  # run_stack installs SIGINT/SIGTERM handlers
    assert stack.run_stack("tiny", 50050, tmp_path) == 1
    err = capsys.readouterr().err
    assert "playground: http://127.0.0.1:8080/" in err
    assert "web exited; stopping the stack" in err
    assert "stop modaverse-gateway" in fakes


@pytest.mark.parametrize(
    ("argv", "web_port"), [([], 8080), (["--web-port", "9000"], 9000), (["--web-port", "0"], 0), (["--no-web"], None)]
)
def test_up_passes_the_web_port(argv: list[str], web_port: int | None, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, object] = {}

    def run_stack(**kwargs: object) -> int:
        seen.update(kwargs)
        return 0

    monkeypatch.setattr(stack, "run_stack", run_stack)
    with pytest.raises(SystemExit) as exit_:
        main(["up", *argv])
    assert exit_.value.code == 0
    assert seen["web_port"] == web_port and seen["gateway_port"] == 50050


def test_every_generator_gets_a_route_and_a_modalitys_first_is_its_default(fakes: list[str], tmp_path: Path) -> None:
    running = stack.start_stack(log_dir=tmp_path)
    routes = stack.routing_table(running.services, "tiny")["generators"]
    assert isinstance(routes, dict)
    assert {name: (r["modality"], r["default"]) for name, r in routes.items()} == {
        "image-tiny": ("image", True),  # the meta-response's `Modality: [IMAGE]`: text-to-image
        "image-to-image-tiny": ("image", False),  # direct generation by name
        "video-tiny": ("video", True),
        "audio-tiny": ("audio", True),
    }
    assert routes["image-to-image-tiny"]["endpoints"] == [running.services["gen-image-to-image"].target]
    assert "launch modaverse-generator[image-to-image]" in fakes
