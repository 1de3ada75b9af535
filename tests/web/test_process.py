"""``modaverse-web serve`` as a real process: flags and ``MODAVERSE_*`` settings, the port file, and the
SIGTERM drain (not ready at once, still answering, in-flight streams finish, exit code 0)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from .stack import Stack

SLOW = {
    "model": "modaverse",
    "messages": [{"role": "user", "content": "SLOW Modality: [TEXT] Prompt: " + "word " * 30}],
    "stream": True,
}


def wait_for_file(path: Path, proc: subprocess.Popen[bytes], timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while not (path.exists() and path.read_text()):
        assert proc.poll() is None, "modaverse-web exited early"
        assert time.monotonic() < deadline, "modaverse-web did not start"
        time.sleep(0.05)
    return path.read_text()


def test_serve_drains_on_sigterm(stack: Stack, tmp_path: Path) -> None:
    port_file = tmp_path / "port"
    env = {**os.environ, "MODAVERSE_DRAIN_DELAY_S": "3", "MODAVERSE_GRACE_PERIOD_S": "30", "MODAVERSE_PORT": "1"}
    command = [sys.executable, "-m", "modaverse_web", "serve", "--host", "127.0.0.1", "--port", "0"]
    command += ["--gateway", stack.gateway_target, "--port-file", str(port_file)]
    log = (tmp_path / "web.log").open("wb")
    proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{wait_for_file(port_file, proc)}"  # --port 0 beat MODAVERSE_PORT=1
        with httpx.Client(base_url=url, timeout=60) as http:
            assert http.get("/readyz").json() == {"status": "ready"}
            with http.stream("POST", "/v1/chat/completions", json=SLOW) as stream:
                lines = stream.iter_lines()
                assert next(lines).startswith("data: ")
                proc.send_signal(signal.SIGTERM)
                for _ in range(200):  # not ready at once ...
                    if http.get("/readyz").status_code == 503:
                        break
                    time.sleep(0.01)
                assert http.get("/readyz").json() == {"status": "draining"}
                assert http.get("/healthz").status_code == 200  # ... but alive and still answering
                rest = [line for line in lines if line.startswith("data: ")]
            assert rest[-1] == "data: [DONE]"  # the in-flight stream ran to its end
            assert '"finish_reason":"stop"' in rest[-2]
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
    output = (tmp_path / "web.log").read_text()
    assert "draining" in output
    assert "web stopped" in output
