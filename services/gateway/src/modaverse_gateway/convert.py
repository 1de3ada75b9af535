"""Proto ↔ domain conversion for the gateway (unit-tested on its own)."""

from __future__ import annotations

from modaverse_protos.common.v1 import common_pb2
from modaverse_protos.encoder.v1 import encoder_pb2
from modaverse_protos.gateway.v1 import gateway_pb2
from modaverse_protos.generator.v1 import generator_pb2
from modaverse_protos.llm.v1 import llm_pb2
from modaverse_runtime.errors import ModaverseError

from .metaresponse import Invocation, OutputModality, ParsedResponse

MODALITY_PROTO = {
    OutputModality.TEXT: common_pb2.MODALITY_TEXT,
    OutputModality.IMAGE: common_pb2.MODALITY_IMAGE,
    OutputModality.VIDEO: common_pb2.MODALITY_VIDEO,
    OutputModality.AUDIO: common_pb2.MODALITY_AUDIO,
}
_ROLE = {gateway_pb2.ROLE_ASSISTANT: llm_pb2.ROLE_ASSISTANT}


def encode_request(request: gateway_pb2.ChatRequest) -> encoder_pb2.EncodeRequest:
    """Every user-turn media item, in order, in one Encode call (the LLM needs only the rows)."""
    media = [m for t in request.turns if t.role != gateway_pb2.ROLE_ASSISTANT for m in t.media]
    return encoder_pb2.EncodeRequest(media=media, omit_imagebind=True)


def embed_encode_request(request: gateway_pb2.EmbedRequest) -> encoder_pb2.EncodeRequest:
    """An Embed's items, in order, in one Encode call for their ImageBind vectors only (no adaptor rows)."""
    return encoder_pb2.EncodeRequest(media=request.items, omit_projected=True)


def embed_response(reply: encoder_pb2.EncodeResponse, items: int) -> gateway_pb2.EmbedResponse:
    """The encoder's vectors, one per item in order. An answer that does not have one per item is the
    encoder's fault (INTERNAL), never passed on as if it were right."""
    vectors = [e.imagebind for e in reply.embeddings]
    if len(vectors) != items or any(not v.shape for v in vectors):
        raise ModaverseError(f"the encoder answered {len(vectors)} embeddings (with vectors or not) for {items} items")
    return gateway_pb2.EmbedResponse(embeddings=vectors, encoder_id=reply.encoder_id, encoder_model=reply.encoder_model)


def llm_request(request: gateway_pb2.ChatRequest, encoded: encoder_pb2.EncodeResponse) -> llm_pb2.GenerateRequest:
    """Turns → LLM messages; in a user turn the media come first, then the text (the release's
    ``### Human: {media} {instruction}``)."""
    rows = iter(encoded.embeddings)
    out = llm_pb2.GenerateRequest(adapter=request.options.adapter)
    for turn in request.turns:
        role = _ROLE.get(turn.role, llm_pb2.ROLE_USER)
        message = out.messages.add(role=role)
        if role == llm_pb2.ROLE_USER:
            for media in turn.media:
                emb = next(rows)
                message.segments.add(embeddings=llm_pb2.EmbeddingBlock(modality=media.modality, rows=emb.projected))
        if turn.text.strip():
            message.segments.add(text=turn.text)
    opts, sampling = request.options, out.sampling
    for name in ("max_tokens", "temperature", "top_p", "seed"):
        if opts.HasField(name):
            setattr(sampling, name, getattr(opts, name))
    return out


def _with_overrides(prompt: str, overrides: gateway_pb2.GeneratorOverrides | None) -> generator_pb2.GenerateRequest:
    """A generator request: the prompt plus the caller's settings (unset ones stay unset: the generator's
    defaults apply). ``overrides.model`` picks the route and is not part of it."""
    out = generator_pb2.GenerateRequest(prompt=prompt)
    if overrides is not None:
        out.negative_prompt = overrides.negative_prompt
        for name in ("seed", "steps", "guidance_scale", "width", "height", "num_frames", "fps", "duration_seconds"):
            if overrides.HasField(name):
                setattr(out, name, getattr(overrides, name))
        out.params.update(overrides.params)  # the generator knows its parameters; the gateway does not
    return out


def generator_request(invocation: Invocation, request: gateway_pb2.ChatRequest) -> generator_pb2.GenerateRequest:
    """A chat's invocation, with the chat's overrides for its modality."""
    overrides = request.options.generator_overrides
    return _with_overrides(invocation.prompt, overrides.get(invocation.modality.value))  # .get adds no entry


def direct_generator_request(request: gateway_pb2.GenerateRequest) -> generator_pb2.GenerateRequest:
    """A Generate call's one invocation: its prompt and options, as a chat's invocation gets them, and its input
    image if any."""
    out = _with_overrides(request.prompt, request.options)
    if request.HasField("image"):
        out.image.CopyFrom(request.image)
    return out


def meta_response_event(parsed: ParsedResponse, models: list[str]) -> gateway_pb2.ChatEvent:
    event = gateway_pb2.ChatEvent()
    meta = event.meta_response
    meta.raw, meta.answer, meta.parsed = parsed.raw, parsed.answer, parsed.parsed
    for index, (inv, model) in enumerate(zip(parsed.invocations, models, strict=True)):
        meta.invocations.add(index=index, modality=MODALITY_PROTO[inv.modality], prompt=inv.prompt, model=model)
    return event


def generator_event(index: int, response: generator_pb2.GenerateResponse) -> gateway_pb2.ChatEvent | None:
    kind = response.WhichOneof("event")
    if kind == "progress":
        p = response.progress
        return gateway_pb2.ChatEvent(
            progress=gateway_pb2.InvocationProgress(index=index, step=p.step, total_steps=p.total_steps)
        )
    if kind == "chunk":
        c = response.chunk
        return gateway_pb2.ChatEvent(
            media_chunk=gateway_pb2.MediaChunk(
                index=index, mime_type=c.mime_type, data=c.data, offset=c.offset, total_bytes=c.total_bytes
            )
        )
    if kind == "done":
        d = response.done
        return gateway_pb2.ChatEvent(
            invocation_done=gateway_pb2.InvocationDone(
                index=index, seed=d.seed, elapsed_seconds=d.elapsed_seconds, mime_type=d.mime_type
            )
        )
    return None
