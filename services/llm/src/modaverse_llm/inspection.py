"""``modaverse-llm verify-release`` and ``render-prompt``: look at what the model will be served.

verify-release checks a folder written by convert-release (layout, tokenizer, shapes, dtypes; see
``check_converted``), then loads it through the serving backend and answers one prompt with one
media row, printing a short report. render-prompt shows exactly what the model sees for a message:
from a running service (the RenderPrompt RPC) or offline from a model folder (its tokenizer only).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from modaverse_protos.llm.v1 import llm_pb2

from . import convert
from .prompt import PromptBuilder
from .release import OUT_ADAPTER, OUT_ADAPTOR, OUT_BASE
from .template import ADDED_TOKENS
from .tiny import LORA_ALPHA, LORA_R, LORA_TARGETS
from .tokenizer import load_tokenizer
from .types import GenerationRequest, MediaRows, Message, Role, SamplingParams

IMAGEBIND_DIM = 1024  # imagebind_huge's embedding width: the adaptor's input


@dataclass
class Report:
    lines: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def fact(self, text: str) -> None:
        self.lines.append(f"  ok   {text}")

    def problem(self, text: str) -> None:
        self.problems.append(text)
        self.lines.append(f"  FAIL {text}")


def _tensors(path: Path) -> dict[str, tuple[list[int], str]]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return {k: (list(f.get_slice(k).get_shape()), str(f.get_slice(k).get_dtype())) for k in f.keys()}  # noqa: SIM118


def check_converted(root: Path, report: Report) -> dict[str, Any]:
    """Static checks; returns what the run needs (hidden size, adaptor tensors' file)."""
    base, adapter, adaptor = root / OUT_BASE, root / OUT_ADAPTER, root / OUT_ADAPTOR
    for folder, marker in ((base, "config.json"), (adapter, "adapter_config.json"), (adaptor, "adaptor_config.json")):
        if not (folder / marker).is_file():
            report.problem(f"{folder} has no {marker}: not the layout convert-release writes")
    if report.problems:
        return {}
    config = json.loads((base / "config.json").read_text())
    hidden, vocab = int(config["hidden_size"]), int(config["vocab_size"])
    report.fact(
        f"base: {config.get('architectures', ['?'])[0]}, {config['num_hidden_layers']} layers, hidden {hidden}, "
        f"vocabulary {vocab}, dtype {config.get('dtype') or config.get('torch_dtype')}"
    )
    tokenizer = load_tokenizer(str(base))
    ids = [tokenizer.convert_tokens_to_ids(t) for t in ADDED_TOKENS]
    if len(tokenizer) != vocab:
        report.problem(f"tokenizer has {len(tokenizer)} tokens, the model {vocab} embedding rows")
    if ids != list(range(vocab - len(ADDED_TOKENS), vocab)):
        report.problem(f"added tokens {dict(zip(ADDED_TOKENS, ids, strict=True))} are not the last rows in order")
    else:
        report.fact(
            f"tokenizer: {len(tokenizer)} tokens ({type(tokenizer).__name__}), added tokens at {ids[0]}..{ids[-1]}"
        )
    lora = json.loads((adapter / "adapter_config.json").read_text())
    shape = (int(lora.get("r", 0)), int(lora.get("lora_alpha", 0)), sorted(lora.get("target_modules") or []))
    if shape != (LORA_R, LORA_ALPHA, sorted(LORA_TARGETS)):
        report.problem(f"LoRA r/alpha/targets {shape}; the release's are {(LORA_R, LORA_ALPHA, sorted(LORA_TARGETS))}")
    weights = _tensors(adapter / "adapter_model.safetensors")
    wrong = [k for k, (s, _) in weights.items() if "lora_A" in k and s != [shape[0], hidden]]
    if wrong:
        report.problem(f"{len(wrong)} lora_A tensors are not ({shape[0]}, {hidden}), e.g. {wrong[0]}")
    else:
        report.fact(f"adapter: {len(weights)} LoRA tensors, r {shape[0]}, alpha {shape[1]}, {', '.join(shape[2])}")
    adaptor_tensors = _tensors(adaptor / "adaptor.safetensors")
    projection = adaptor_tensors.get("shared.weight")
    if projection is None or projection[0] != [hidden, IMAGEBIND_DIM]:
        report.problem(f"adaptor shared.weight is {projection}; expected [{hidden}, {IMAGEBIND_DIM}]")
    else:
        report.fact(f"adaptor: ImageBind {IMAGEBIND_DIM} -> {hidden} ({projection[1]})")
    return {"hidden": hidden}


def _media_row(root: Path, seed: int = 0) -> torch.Tensor:
    from safetensors.torch import load_file

    adaptor = load_file(str(root / OUT_ADAPTOR / "adaptor.safetensors"))
    feature = torch.randn(1, IMAGEBIND_DIM, generator=torch.Generator().manual_seed(seed))
    return feature @ adaptor["shared.weight"].float().T + adaptor["shared.bias"].float()


async def _answer(root: Path, prompt: str, device: str, max_tokens: int, report: Report) -> None:
    from .settings import LLMSettings
    from .transformers_backend import TransformersBackend
    from .types import Completion

    settings = LLMSettings(
        profile="full",
        base_model=str(root / OUT_BASE),
        adapters={"default": root / OUT_ADAPTER},
        device=device,
        batching=False,
    )
    backend = TransformersBackend(settings)
    await asyncio.to_thread(backend.load)
    try:
        row = _media_row(root).to(backend.dtype)
        message = Message(Role.USER, (MediaRows("image", row), prompt))
        request = GenerationRequest((message,), SamplingParams(max_tokens=max_tokens, temperature=0.0))
        prepared = backend.prepare(request)
        events = [e async for e in backend.generate(request)]
        result = events[-1]
        assert isinstance(result, Completion)
        report.fact(f"prompt: {prepared.length} positions for one image row and {prompt!r}")
        report.fact(f"answer ({result.completion_tokens} tokens, {result.finish_reason.value}): {result.text!r}")
    finally:
        await backend.close()
        backend.unload()


def verify_release(root: Path, prompt: str, device: str = "auto", max_tokens: int = 48) -> Report:
    report = Report()
    if check_converted(root, report) and not report.problems:
        asyncio.run(_answer(root, prompt, device, max_tokens, report))
    return report


# -- render-prompt ----------------------------------------------------------------------------------
def _message(text: str, media: list[str], rows: int) -> Message:
    """The release's order: every media item, then the instruction (zero rows: only counts matter)."""
    items = tuple(MediaRows(kind, torch.zeros(1, rows)) for kind in media)
    return Message(Role.USER, (*items, text) if text else items)


def offline_render(
    model: Path, text: str, media: list[str], context_length: int, max_tokens: int
) -> llm_pb2.RenderPromptResponse:
    tokenizer = load_tokenizer(str(model))
    prompt = PromptBuilder(tokenizer).build([_message(text, media, 1)], context_length, max_tokens)
    return convert.render_response(prompt, tokenizer, context_length)


def remote_render(target: str, text: str, media: list[str], max_tokens: int) -> llm_pb2.RenderPromptResponse:
    import grpc

    from modaverse_protos.llm.v1 import llm_pb2_grpc
    from modaverse_runtime.tensors import from_torch

    with grpc.insecure_channel(target) as channel:
        stub = llm_pb2_grpc.LLMServiceStub(channel)
        try:
            hidden = stub.Info(llm_pb2.InfoRequest(), timeout=30).hidden_size
            message = llm_pb2.Message(role=llm_pb2.ROLE_USER)
            for item in _message(text, media, hidden).segments:
                if isinstance(item, MediaRows):
                    block = llm_pb2.EmbeddingBlock(
                        modality=convert.MODALITY_CODES[item.modality], rows=from_torch(item.rows)
                    )
                    message.segments.add(embeddings=block)
                else:
                    message.segments.add(text=item)
            request = llm_pb2.GenerateRequest(
                messages=[message], sampling=llm_pb2.SamplingParams(max_tokens=max_tokens)
            )
            response: llm_pb2.RenderPromptResponse = stub.RenderPrompt(request, timeout=30)
        except grpc.RpcError as exc:
            raise ValueError(f"{target}: {exc.code().name}: {exc.details()}") from exc
    return response


def describe(rendered: llm_pb2.RenderPromptResponse) -> str:
    """Text, then one line per position: index, id, token string (whitespace visible)."""
    lines = [
        f"{rendered.length} positions of {rendered.context_length}; {rendered.truncated_messages} messages dropped",
        repr(rendered.text),
        "",
    ]
    position = 0
    for piece in rendered.pieces:
        if piece.WhichOneof("content") == "media":
            lines.append(f"{position:5d}  {'-':>6}  [{piece.media.rows} media row(s)]")
            position += piece.media.rows
            continue
        for token_id, token in zip(piece.tokens.ids, piece.tokens.tokens, strict=True):
            lines.append(f"{position:5d}  {token_id:6d}  {token!r}")
            position += 1
    return "\n".join(lines)
