"""Any service as a real OS process: ``modaverse-<name> serve`` on a loopback port, waited on until ready,
stopped with SIGTERM, everything it wrote kept in a log file for the test to read.

Built on the SDK's ``LocalService``, which ``modaverse up`` runs, so tests start services the way users do:
``--port 0 --port-file F`` (the bound port comes back in F), then gRPC health SERVING, or ``GET /readyz``
answering 200 for the web front door.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modaverse.local import LocalService, LocalWebService, service_executable

from .in_process import free_port


@dataclass
class Stopped:
    code: int
    output: str  # everything the process wrote, stdout and stderr together


class ServiceProcess:
    """One service process; see :func:`service_process`, :func:`started` and :func:`running`."""

    def __init__(self, service: LocalService, log: Path, metrics_port: int = 0) -> None:
        self.service = service
        self.log = log
        self.metrics_port = metrics_port
        self.sigterm_at: float | None = None

    @property
    def proc(self) -> subprocess.Popen[bytes]:
        assert self.service.proc is not None, "the process was never launched"
        return self.service.proc

    @property
    def alive(self) -> bool:
        return self.service.proc is not None and self.service.proc.poll() is None

    @property
    def port(self) -> int:
        return self.service.port

    @property
    def target(self) -> str:
        return self.service.target

    def launch(self) -> ServiceProcess:
        """Spawn the process without waiting: several can load their models at once."""
        self.service.launch()
        return self

    def wait_ready(self, timeout: float = 120.0) -> ServiceProcess:
        """Until the port file names the port and the service says it is ready; raises with the log's tail
        if the process exits first."""
        self.service.wait_ready(timeout)
        return self

    def start(self, timeout: float = 120.0) -> ServiceProcess:
        return self.launch().wait_ready(timeout)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for_output(self, text: str, timeout: float = 60.0) -> None:
        """Until the process has written ``text``: the moment a log line proves it reached a state."""
        deadline = time.monotonic() + timeout
        while text not in self.output():
            assert time.monotonic() < deadline, f"{text!r} not in {self.log} after {timeout:.0f}s"
            time.sleep(0.02)

    def metrics(self) -> str:
        """The Prometheus text the service exports (started with ``metrics=True``)."""
        assert self.metrics_port, "started without metrics=True"
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as reply:
            body: bytes = reply.read()
        return body.decode()

    def sigterm(self) -> float:
        """Start the graceful drain; returns when the signal was sent (``time.monotonic()``)."""
        self.sigterm_at = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        return self.sigterm_at

    def stop(self, timeout: float = 60.0) -> Stopped:
        """SIGTERM (unless :meth:`sigterm` sent it already: a second one is not part of the drain under test),
        then wait for the exit; raises ``subprocess.TimeoutExpired`` if the drain outlasts ``timeout``."""
        if self.sigterm_at is None and self.alive:
            self.sigterm()
        code = self.proc.wait(timeout)
        self.service.stop()  # it has exited: this only closes the log and removes the port file's folder
        return Stopped(code, self.output())

    def kill(self) -> None:
        """Clean-up: SIGKILL whatever still runs (a test that wanted a drain has had it), close the log."""
        if self.alive:
            self.proc.kill()
            self.proc.wait(10)
        self.service.stop()


def service_process(
    name: str,
    logs: Path,
    env: Mapping[str, str] | None = None,
    *,
    model_dir: Path | None = None,
    metrics: bool = False,
    port: int = 0,
    gateway: str | None = None,
    log_name: str | None = None,
) -> ServiceProcess:
    """``modaverse-<name> serve`` (encoder, llm, generator, gateway or web), not launched yet.

    ``env`` holds ``MODAVERSE_*`` settings (over this process's environment); ``model_dir`` and ``metrics``
    (on a free port) add theirs. ``port`` 0 binds any free port; a restart passes the old one. ``gateway`` is
    what the web front door calls. The output goes to ``<logs>/<log_name or name>.log``.
    """
    settings = {"HF_HUB_OFFLINE": "1"}  # a test never downloads
    if model_dir is not None:
        settings["MODAVERSE_MODEL_DIR"] = str(model_dir)
    metrics_port = free_port() if metrics else 0
    if metrics_port:
        settings["MODAVERSE_METRICS_PORT"] = str(metrics_port)
    settings.update(env or {})
    log = logs / f"{log_name or name}.log"
    executable = service_executable(f"modaverse-{name}")
    service: LocalService
    if name == "web":
        assert gateway is not None, "the web front door needs the gateway it calls"
        service = LocalWebService(executable, gateway=gateway, env=settings, port=port, log_path=log)
    else:
        service = LocalService(executable, env=settings, port=port, log_path=log)
    return ServiceProcess(service, log, metrics_port)


@contextmanager
def started(*processes: ServiceProcess, timeout: float = 120.0) -> Iterator[None]:
    """Launch every process, then wait for each (their start-ups overlap); on the way out SIGKILL what still
    runs, also when a start failed."""
    try:
        for process in processes:
            process.launch()
        for process in processes:
            process.wait_ready(timeout)
        yield
    finally:
        for process in reversed(processes):
            process.kill()


@contextmanager
def running(
    name: str, logs: Path, env: Mapping[str, str] | None = None, *, timeout: float = 120.0, **options: Any
) -> Iterator[ServiceProcess]:
    """One :func:`service_process` (``options`` are its keywords), ready inside the block, gone after it."""
    process = service_process(name, logs, env, **options)
    with started(process, timeout=timeout):
        yield process


def module_help(module: str, *command: str) -> str:
    """``python -m <module> <command…> --help``: its help text, so a test can check that ``__main__`` runs the
    service's CLI (the process tests run the console scripts)."""
    out = subprocess.run(
        [sys.executable, "-m", module, *command, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        check=True,
    )
    return out.stdout
