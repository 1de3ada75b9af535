"""Running ModaVerse services as local processes (the demo, tests, and later `modaverse up`)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def service_executable(name: str) -> str:
    """The console script ``name``, preferring the one beside the running interpreter."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else (shutil.which(name) or name)


class LocalService:
    """``<exe> serve --port 0 --port-file F`` in a child process; waits for SERVING."""

    def __init__(
        self,
        executable: str,
        *,
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        host: str = "127.0.0.1",
        log_path: Path | None = None,
    ) -> None:
        self.executable = executable
        self.args = list(args)
        self.env = {**os.environ, **(env or {})}
        self.host = host
        self.log_path = log_path
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self._tmp = tempfile.TemporaryDirectory(prefix="modaverse-")
        self._log: IO[bytes] | None = None

    @property
    def target(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout: float = 300.0) -> LocalService:
        port_file = Path(self._tmp.name) / "port"
        log_path = self.log_path or Path(self._tmp.name) / "server.log"
        self._log = log_path.open("wb")
        cmd = [self.executable, "serve", "--host", self.host, "--port", "0", "--port-file", str(port_file)]
        self.proc = subprocess.Popen([*cmd, *self.args], env=self.env, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while not (port_file.exists() and port_file.read_text().strip()):
            self._check_alive(log_path)
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.executable} did not bind a port within {timeout:.0f}s")
            time.sleep(0.05)
        self.port = int(port_file.read_text())
        self.wait_serving(deadline - time.monotonic(), log_path)
        return self

    def _check_alive(self, log_path: Path) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            tail = log_path.read_text(errors="replace")[-4000:] if log_path.exists() else ""
            raise RuntimeError(f"{self.executable} exited with {self.proc.returncode}:\n{tail}")

    def wait_serving(self, timeout: float, log_path: Path) -> None:
        deadline = time.monotonic() + max(timeout, 0.0)
        with grpc.insecure_channel(self.target) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while True:
                self._check_alive(log_path)
                try:
                    reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{self.executable} did not become SERVING")
                time.sleep(0.2)

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM (graceful drain), then SIGKILL after ``timeout``. Returns the exit code."""
        code = 0
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                code = self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                code = self.proc.wait()
        elif self.proc is not None:
            code = self.proc.returncode
        if self._log is not None:
            self._log.close()
        self._tmp.cleanup()
        return code

    def __enter__(self) -> LocalService:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
