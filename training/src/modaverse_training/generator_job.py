"""The image generator's training as a child process, beside the LLM's (the tiny recipe's two halves).

The LLM half trains on one torch thread (faster than two for the tiny model on a shared 2-core machine,
docs/training.md), so the generator trains at the same time on the other core, in its own process (a
thread would fight the LLM's Python work for the GIL). Its progress comes back as plain lines that the
parent shows as notes of its own display ("image generator: denoiser 600/1400 steps ..."), and its
summary (or its error) comes back when it ends.
"""

from __future__ import annotations

import io
import multiprocessing
import queue
import threading
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO, cast

from .image_generator import GeneratorTrainConfig, train_image_generator
from .progress import Progress

LABEL = "image generator"
_Queue = Any  # multiprocessing's Queue type is not generic at runtime


class GeneratorTrainingError(RuntimeError):
    """The child failed; the message holds its traceback."""


class _LinesToQueue(io.TextIOBase):
    """A text stream for the child's Progress: each complete line goes to the parent."""

    def __init__(self, out: _Queue) -> None:
        self._out = out
        self._partial = ""

    def write(self, text: str) -> int:
        self._partial += text
        *lines, self._partial = self._partial.split("\n")
        for line in lines:
            if line.strip():
                self._out.put(("line", line))
        return len(text)

    def isatty(self) -> bool:
        return False


def _child(dirs: dict[str, str], config: GeneratorTrainConfig, seed: int, out: _Queue, show: bool) -> None:
    try:
        stream = cast(TextIO, _LinesToQueue(out))  # a TextIOBase: what Progress writes to
        progress = Progress("lines", stream) if show else Progress.off()
        summary = train_image_generator(
            {k: Path(v) for k, v in dirs.items()}, config=config, progress=progress, seed=seed
        )
        out.put(("done", summary))
    except BaseException:
        out.put(("error", traceback.format_exc()))


@dataclass
class GeneratorJob:
    """A running child; ``wait`` returns its summary (raises GeneratorTrainingError if it failed)."""

    process: Any
    messages: _Queue
    progress: Progress
    outcome: list[tuple[str, Any]] = field(default_factory=list)
    _forwarder: threading.Thread | None = None

    def _forward(self) -> None:
        while True:
            try:
                kind, value = self.messages.get(timeout=0.5)
            except queue.Empty:
                if self.process.is_alive():
                    continue
                try:  # it may have ended right after its last message
                    kind, value = self.messages.get(timeout=2)
                except queue.Empty:
                    self.outcome.append(("error", f"the process exited with {self.process.exitcode} without a result"))
                    return
            if kind == "line":
                self.progress.note(f"{LABEL}: {value}")
            else:
                self.outcome.append((kind, value))
                return

    def wait(self) -> dict[str, Any]:
        if self._forwarder is not None:
            self._forwarder.join()
        self.process.join()
        kind, value = self.outcome[0] if self.outcome else ("error", "no result")
        if kind != "done":
            raise GeneratorTrainingError(f"training the image generator failed:\n{value}")
        return cast(dict[str, Any], value)

    def stop(self) -> None:
        """The parent failed or was interrupted: the child goes too."""
        if self.process.is_alive():
            self.process.terminate()
        self.process.join(10)


def start_generator_job(
    dirs: dict[str, Path], config: GeneratorTrainConfig, seed: int, progress: Progress
) -> GeneratorJob:
    """Start training in a spawned child (a fresh interpreter: no torch state shared with the parent)."""
    context = multiprocessing.get_context("spawn")
    messages = context.Queue()
    process = context.Process(
        target=_child,
        args=({k: str(v) for k, v in dirs.items()}, config, seed, messages, progress.enabled),
        name="image-generator-training",
        daemon=True,
    )
    process.start()
    job = GeneratorJob(process, messages, progress)
    job._forwarder = threading.Thread(target=job._forward, name="image-generator-progress", daemon=True)
    job._forwarder.start()
    return job
