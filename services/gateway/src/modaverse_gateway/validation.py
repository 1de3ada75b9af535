"""Request checks done before any downstream call (cheap, with messages that say what to fix)."""

from __future__ import annotations

from modaverse_protos.common.v1 import common_pb2
from modaverse_protos.gateway.v1 import gateway_pb2
from modaverse_runtime.errors import InvalidArgument, NotFound

from .metaresponse import MAX_PROMPT_CHARS, OutputModality
from .routes import Route, RoutingTable
from .settings import GatewaySettings

ENCODABLE = (common_pb2.MODALITY_IMAGE, common_pb2.MODALITY_VIDEO, common_pb2.MODALITY_AUDIO)
EMBEDDABLE = (common_pb2.MODALITY_TEXT, *ENCODABLE)
OVERRIDE_KEYS = {m.value for m in (OutputModality.IMAGE, OutputModality.VIDEO, OutputModality.AUDIO)}
GENERATABLE = {
    common_pb2.MODALITY_IMAGE: OutputModality.IMAGE,
    common_pb2.MODALITY_VIDEO: OutputModality.VIDEO,
    common_pb2.MODALITY_AUDIO: OutputModality.AUDIO,
}


def validate_chat(request: gateway_pb2.ChatRequest, settings: GatewaySettings, routes: RoutingTable) -> None:
    turns = request.turns
    if not turns:
        raise InvalidArgument("the request has no turns; send at least one user turn with text or media")
    if len(turns) > settings.max_turns:
        raise InvalidArgument(f"{len(turns)} turns; the limit is {settings.max_turns}")
    if turns[-1].role == gateway_pb2.ROLE_ASSISTANT:
        raise InvalidArgument("the last turn must be the user's")
    text_chars = sum(len(t.text) for t in turns)
    if text_chars > settings.max_text_chars:
        raise InvalidArgument(f"{text_chars} characters of text; the limit is {settings.max_text_chars}")
    media_items = sum(len(t.media) for t in turns)
    if media_items > settings.max_media_items:
        raise InvalidArgument(f"{media_items} media items; the limit is {settings.max_media_items}")
    max_bytes = int(settings.max_media_mb * 2**20)
    for ti, turn in enumerate(turns):
        if not turn.text.strip() and not turn.media:
            raise InvalidArgument(f"turns[{ti}] has no text and no media")
        for mi, media in enumerate(turn.media):
            where = f"turns[{ti}].media[{mi}]"
            if media.modality not in ENCODABLE:
                raise InvalidArgument(f"{where}: modality {media.modality} is not supported; use IMAGE, VIDEO or AUDIO")
            if media.WhichOneof("source") != "data" or not media.data:
                raise InvalidArgument(f"{where}: send the media bytes in 'data' (uri sources are not fetched)")
            if len(media.data) > max_bytes:
                raise InvalidArgument(f"{where}: {len(media.data)} bytes; the limit is {max_bytes}")
    for key, override in request.options.generator_overrides.items():
        if key not in OVERRIDE_KEYS:
            raise InvalidArgument(f"generator_overrides key {key!r} is not one of {sorted(OVERRIDE_KEYS)}")
        if override.model:
            routes.resolve(OutputModality(key), override.model)  # unknown model → INVALID_ARGUMENT


def _modality_name(value: int) -> str:
    return common_pb2.Modality.Name(value) if value in common_pb2.Modality.values() else str(value)  # type: ignore[arg-type]


def validate_embed(request: gateway_pb2.EmbedRequest, settings: GatewaySettings) -> None:
    """Checks an Embed request: item count, kinds, bytes present and within the media size limit, texts valid
    UTF-8 and not blank, all texts together within ``max_text_chars``. The encoder checks the rest (a text's
    type and length, decoding the media) and names the item by the same index."""
    items = request.items
    if not items:
        raise InvalidArgument("the request has no items; send at least one text, image, video or audio item")
    if len(items) > settings.max_embed_items:
        raise InvalidArgument(f"{len(items)} items; the limit is {settings.max_embed_items}")
    max_bytes = int(settings.max_media_mb * 2**20)
    text_chars = 0
    for i, item in enumerate(items):
        where = f"items[{i}]"
        if item.modality not in EMBEDDABLE:
            raise InvalidArgument(
                f"{where}: modality {_modality_name(item.modality)} cannot be embedded; use TEXT, IMAGE, VIDEO or AUDIO"
            )
        if item.WhichOneof("source") == "uri":
            raise InvalidArgument(f"{where}: send the bytes in 'data' (uri sources are not fetched)")
        if item.modality == common_pb2.MODALITY_TEXT:
            try:
                text = item.data.decode("utf-8")
            except UnicodeDecodeError as exc:
                message = f"{where}: the text is not valid UTF-8 (byte {exc.start}: {exc.reason})"
                raise InvalidArgument(message) from None
            if not text.strip():
                raise InvalidArgument(f"{where}: the text is empty; send at least one non-blank character")
            text_chars += len(text)
            continue
        if not item.data:
            raise InvalidArgument(f"{where}: no bytes; send the media bytes in 'data'")
        if len(item.data) > max_bytes:
            raise InvalidArgument(f"{where}: {len(item.data)} bytes; the limit is {max_bytes}")
    if text_chars > settings.max_text_chars:
        raise InvalidArgument(f"{text_chars} characters of text; the limit is {settings.max_text_chars}")


def generate_prompt_limit(settings: GatewaySettings) -> int:
    """A direct generation's prompt: at most what a chat may send as text, and at most what the gateway
    passes on from a meta-response as one invocation's prompt."""
    return min(settings.max_text_chars, MAX_PROMPT_CHARS)


def validate_generate(request: gateway_pb2.GenerateRequest, settings: GatewaySettings, routes: RoutingTable) -> Route:
    """Checks a Generate request and returns its route (``options.model``, or the modality's default).

    An unknown model name is NOT_FOUND; a model of another modality or a modality with no route is
    INVALID_ARGUMENT, as in a chat. The generator checks the settings themselves (steps, size …) and
    whether its kind takes an input image; here only that one is bytes within the media size limit."""
    modality = GENERATABLE.get(request.modality)
    if modality is None:
        name = common_pb2.Modality.Name(request.modality) if request.modality in common_pb2.Modality.values() else ""
        raise InvalidArgument(
            f"modality {name or request.modality} cannot be generated; use MODALITY_IMAGE, MODALITY_VIDEO or "
            "MODALITY_AUDIO"
        )
    if not request.prompt.strip():
        raise InvalidArgument("the prompt is empty; say what to generate")
    limit = generate_prompt_limit(settings)
    if len(request.prompt) > limit:
        raise InvalidArgument(f"the prompt has {len(request.prompt)} characters; the limit is {limit}")
    if request.HasField("image"):  # whether the route's generator takes one is the generator's to say
        if request.image.WhichOneof("source") != "data" or not request.image.data:
            raise InvalidArgument("image: send the image bytes in 'data' (uri sources are not fetched)")
        max_bytes = int(settings.max_media_mb * 2**20)
        if len(request.image.data) > max_bytes:
            raise InvalidArgument(f"image: {len(request.image.data)} bytes; the limit is {max_bytes}")
    return routes.resolve(modality, request.options.model, unknown=NotFound)
