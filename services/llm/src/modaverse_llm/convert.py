"""Proto ↔ domain conversion for the LLM service (unit-tested on its own)."""

from __future__ import annotations

from typing import Any

import torch

from modaverse_protos.common.v1 import common_pb2
from modaverse_protos.llm.v1 import llm_pb2
from modaverse_runtime.errors import InvalidArgument
from modaverse_runtime.tensors import to_torch

from .prompt import MediaPiece, PreparedPrompt
from .types import (
    AdapterInfo,
    BackendInfo,
    Completion,
    Delta,
    Event,
    FinishReason,
    GenerationRequest,
    MediaRows,
    Message,
    Role,
    SamplingParams,
    Segment,
)

_ROLES = {llm_pb2.ROLE_USER: Role.USER, llm_pb2.ROLE_ASSISTANT: Role.ASSISTANT}
_MODALITIES = {
    common_pb2.MODALITY_IMAGE: "image",
    common_pb2.MODALITY_VIDEO: "video",
    common_pb2.MODALITY_AUDIO: "audio",
}
_FINISH = {
    FinishReason.STOP: common_pb2.FINISH_REASON_STOP,
    FinishReason.LENGTH: common_pb2.FINISH_REASON_LENGTH,
    FinishReason.CANCELLED: common_pb2.FINISH_REASON_CANCELLED,
}
DTYPE_CODES = {
    torch.float32: common_pb2.DTYPE_FLOAT32,
    torch.float16: common_pb2.DTYPE_FLOAT16,
    torch.bfloat16: common_pb2.DTYPE_BFLOAT16,
}
MAX_TEXT_CHARS = 262_144  # per segment; tokenized on the event loop, so keep it bounded


def media_rows(
    block: llm_pb2.EmbeddingBlock, where: str, hidden_size: int, dtype: torch.dtype, max_rows: int
) -> MediaRows:
    modality = _MODALITIES.get(block.modality)
    if modality is None:
        raise InvalidArgument(f"{where}: embedding modality must be IMAGE, VIDEO or AUDIO, got {block.modality}")
    if not block.HasField("rows"):
        raise InvalidArgument(f"{where}: embeddings.rows is missing")
    try:
        rows = to_torch(block.rows)
    except InvalidArgument as exc:
        raise InvalidArgument(f"{where}: {exc.message}") from exc
    if rows.dim() != 2:
        raise InvalidArgument(f"{where}: rows must have shape (rows, {hidden_size}), got {list(rows.shape)}")
    if rows.shape[1] != hidden_size:
        raise InvalidArgument(f"{where}: rows have width {rows.shape[1]}; this model's hidden size is {hidden_size}")
    if not 1 <= rows.shape[0] <= max_rows:
        raise InvalidArgument(f"{where}: a media block needs 1 to {max_rows} rows, got {rows.shape[0]}")
    rows = rows.to(dtype)  # also copies out of the message's read-only buffer
    if not bool(torch.isfinite(rows).all()):
        raise InvalidArgument(f"{where}: rows contain NaN or Inf (or overflow {dtype})")
    return MediaRows(modality, rows)


def messages(
    request: llm_pb2.GenerateRequest, hidden_size: int, dtype: torch.dtype, max_rows: int
) -> tuple[Message, ...]:
    out = []
    for i, message in enumerate(request.messages):
        role = _ROLES.get(message.role)
        if role is None:
            raise InvalidArgument(f"messages[{i}]: role must be ROLE_USER or ROLE_ASSISTANT")
        segments: list[Segment] = []
        for j, seg in enumerate(message.segments):
            where = f"messages[{i}].segments[{j}]"
            kind = seg.WhichOneof("content")
            if kind == "text":
                if len(seg.text) > MAX_TEXT_CHARS:
                    raise InvalidArgument(f"{where}: text is over {MAX_TEXT_CHARS} characters")
                segments.append(seg.text)
            elif kind == "embeddings":
                segments.append(media_rows(seg.embeddings, where, hidden_size, dtype, max_rows))
            else:
                raise InvalidArgument(f"{where}: a segment needs text or embeddings")
        out.append(Message(role, tuple(segments)))
    return tuple(out)


def sampling(params: llm_pb2.SamplingParams) -> SamplingParams:
    """Unset fields take the release's defaults; values are validated by the backend."""
    d = SamplingParams()
    return SamplingParams(
        max_tokens=params.max_tokens if params.HasField("max_tokens") else d.max_tokens,
        temperature=params.temperature if params.HasField("temperature") else d.temperature,
        top_p=params.top_p if params.HasField("top_p") else d.top_p,
        top_k=params.top_k if params.HasField("top_k") else d.top_k,
        seed=params.seed if params.HasField("seed") else None,
        stop=tuple(params.stop) if params.stop else d.stop,
        repetition_penalty=params.repetition_penalty if params.HasField("repetition_penalty") else 1.0,
        logprobs=params.logprobs,
        top_logprobs=params.top_logprobs,
    )


def sampling_proto(p: SamplingParams) -> llm_pb2.SamplingParams:
    out = llm_pb2.SamplingParams(
        max_tokens=p.max_tokens,
        temperature=p.temperature,
        top_p=p.top_p,
        top_k=p.top_k,
        stop=list(p.stop),
        repetition_penalty=p.repetition_penalty,
        logprobs=p.logprobs,
        top_logprobs=p.top_logprobs,
    )
    if p.seed is not None:
        out.seed = p.seed
    return out


def generation_request(
    request: llm_pb2.GenerateRequest, hidden_size: int, dtype: torch.dtype, max_rows: int
) -> GenerationRequest:
    return GenerationRequest(
        messages=messages(request, hidden_size, dtype, max_rows),
        sampling=sampling(request.sampling),
        adapter=request.adapter.strip(),
    )


def event_response(event: Event) -> llm_pb2.GenerateResponse:
    logprobs = [
        llm_pb2.PositionLogprobs(
            chosen=llm_pb2.TokenLogprob(token_id=p.chosen.token_id, token=p.chosen.token, logprob=p.chosen.logprob),
            top=[llm_pb2.TokenLogprob(token_id=t.token_id, token=t.token, logprob=t.logprob) for t in p.top],
        )
        for p in event.logprobs
    ]
    if isinstance(event, Delta):
        return llm_pb2.GenerateResponse(delta=event.text, logprobs=logprobs)
    return llm_pb2.GenerateResponse(final=final(event), logprobs=logprobs)


def final(c: Completion) -> llm_pb2.Final:
    return llm_pb2.Final(
        text=c.text,
        prompt_tokens=c.prompt_tokens,
        completion_tokens=c.completion_tokens,
        finish_reason=_FINISH[c.finish_reason],
        truncated_messages=c.truncated_messages,
    )


def adapter_proto(a: AdapterInfo) -> llm_pb2.Adapter:
    return llm_pb2.Adapter(name=a.name, path=a.path, rank=a.rank, is_default=a.is_default)


def info_response(info: BackendInfo, profile: str) -> llm_pb2.InfoResponse:
    return llm_pb2.InfoResponse(
        model=info.model,
        backend=info.backend,
        hidden_size=info.hidden_size,
        dtype=DTYPE_CODES.get(info.dtype, common_pb2.DTYPE_UNSPECIFIED),
        context_length=info.context_length,
        adapters=[adapter_proto(a) for a in info.adapters],
        default_sampling=sampling_proto(SamplingParams()),
        max_batch_size=info.max_batch_size,
        profile=profile,
    )


MODALITY_CODES = {name: code for code, name in _MODALITIES.items()}


def render_response(prompt: PreparedPrompt, tokenizer: Any, context_length: int) -> llm_pb2.RenderPromptResponse:
    """What the model sees: token runs with their token strings, and the media slots between them."""
    out = llm_pb2.RenderPromptResponse(
        length=prompt.length, truncated_messages=prompt.truncated_messages, context_length=context_length
    )
    text: list[str] = []
    for piece in prompt.pieces:
        if isinstance(piece, MediaPiece):
            out.pieces.add(media=llm_pb2.MediaSlot(modality=MODALITY_CODES[piece.modality], rows=len(piece)))
            text.append(f"<{piece.modality} rows={len(piece)}>")
        else:
            decoded = str(tokenizer.decode(piece, skip_special_tokens=False, clean_up_tokenization_spaces=False))
            tokens = [str(t) for t in tokenizer.convert_ids_to_tokens(piece)]
            out.pieces.add(tokens=llm_pb2.TokenRun(ids=piece, tokens=tokens, text=decoded))
            text.append(decoded)
    out.text = "".join(text)
    return out
