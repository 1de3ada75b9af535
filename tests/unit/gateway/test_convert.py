from __future__ import annotations

from modaverse_gateway import convert
from modaverse_gateway.metaresponse import Invocation, OutputModality, parse_meta_response
from modaverse_protos.common.v1 import common_pb2
from modaverse_protos.encoder.v1 import encoder_pb2
from modaverse_protos.gateway.v1 import gateway_pb2
from modaverse_protos.generator.v1 import generator_pb2
from modaverse_protos.llm.v1 import llm_pb2


def media(modality: common_pb2.Modality.ValueType, tag: bytes) -> common_pb2.Media:
    return common_pb2.Media(modality=modality, data=tag)


def test_media_are_encoded_in_order_and_placed_before_the_text() -> None:
    request = gateway_pb2.ChatRequest(
        turns=[
            gateway_pb2.Turn(
                role=gateway_pb2.ROLE_USER, text="what is this?", media=[media(common_pb2.MODALITY_IMAGE, b"a")]
            ),
            gateway_pb2.Turn(role=gateway_pb2.ROLE_ASSISTANT, text="a circle"),
            gateway_pb2.Turn(
                text="and these?",  # unspecified role counts as the user's
                media=[media(common_pb2.MODALITY_AUDIO, b"b"), media(common_pb2.MODALITY_VIDEO, b"c")],
            ),
        ],
        options=gateway_pb2.ChatOptions(adapter="v2", max_tokens=32, top_p=0.5),
    )
    encode = convert.encode_request(request)
    assert [m.data for m in encode.media] == [b"a", b"b", b"c"]
    assert encode.omit_imagebind
    encoded = encoder_pb2.EncodeResponse(
        embeddings=[
            encoder_pb2.Embedding(projected=common_pb2.Tensor(shape=[1, 4], data=bytes([i]) * 16)) for i in range(3)
        ]
    )
    llm = convert.llm_request(request, encoded)
    assert llm.adapter == "v2"
    assert [m.role for m in llm.messages] == [llm_pb2.ROLE_USER, llm_pb2.ROLE_ASSISTANT, llm_pb2.ROLE_USER]
    kinds = [[s.WhichOneof("content") for s in m.segments] for m in llm.messages]
    assert kinds == [["embeddings", "text"], ["text"], ["embeddings", "embeddings", "text"]]
    blocks = [s.embeddings for m in llm.messages for s in m.segments if s.HasField("embeddings")]
    assert [b.rows.data[:1] for b in blocks] == [b"\x00", b"\x01", b"\x02"]
    assert [b.modality for b in blocks] == [
        common_pb2.MODALITY_IMAGE,
        common_pb2.MODALITY_AUDIO,
        common_pb2.MODALITY_VIDEO,
    ]
    assert llm.sampling.max_tokens == 32
    assert llm.sampling.top_p == 0.5
    assert not llm.sampling.HasField("temperature")  # unset stays unset: the LLM's default applies


def test_generator_request_applies_overrides_for_its_modality_only() -> None:
    request = gateway_pb2.ChatRequest(
        options=gateway_pb2.ChatOptions(
            generator_overrides={
                "image": gateway_pb2.GeneratorOverrides(seed=7, steps=3, width=64, negative_prompt="blur")
            }
        )
    )
    image = convert.generator_request(Invocation(OutputModality.IMAGE, "a cat"), request)
    assert (image.prompt, image.seed, image.steps, image.width, image.negative_prompt) == ("a cat", 7, 3, 64, "blur")
    assert not image.HasField("height")
    audio = convert.generator_request(Invocation(OutputModality.AUDIO, "rain"), request)
    assert not audio.HasField("seed")
    assert not audio.HasField("steps")


def test_events() -> None:
    parsed = parse_meta_response("Sure. Modality: [IMAGE] Prompt: a cat ###")
    meta = convert.meta_response_event(parsed, ["sd15"]).meta_response
    assert (meta.raw, meta.answer, meta.parsed) == (parsed.raw, "Sure.", True)
    assert (meta.invocations[0].prompt, meta.invocations[0].model) == ("a cat", "sd15")
    progress = convert.generator_event(
        2, generator_pb2.GenerateResponse(progress=generator_pb2.Progress(step=1, total_steps=4))
    )
    assert progress is not None
    assert (progress.progress.index, progress.progress.step, progress.progress.total_steps) == (2, 1, 4)
    chunk = generator_pb2.GenerateResponse(
        chunk=generator_pb2.Chunk(mime_type="image/png", data=b"xy", offset=4, total_bytes=6)
    )
    event = convert.generator_event(1, chunk)
    assert event is not None
    assert (event.media_chunk.index, event.media_chunk.data, event.media_chunk.offset) == (1, b"xy", 4)
    assert convert.generator_event(0, generator_pb2.GenerateResponse()) is None


def test_direct_generator_request_takes_the_options_as_a_chat_invocation_does() -> None:
    options = gateway_pb2.GeneratorOverrides(model="sdxl", seed=7, steps=3, width=64, negative_prompt="blur")
    out = convert.direct_generator_request(
        gateway_pb2.GenerateRequest(modality=common_pb2.MODALITY_IMAGE, prompt="a cat", options=options)
    )
    chat = gateway_pb2.ChatRequest(options=gateway_pb2.ChatOptions(generator_overrides={"image": options}))
    assert out == convert.generator_request(Invocation(OutputModality.IMAGE, "a cat"), chat)
    assert (out.prompt, out.seed, out.steps, out.width, out.negative_prompt) == ("a cat", 7, 3, 64, "blur")
    assert not out.HasField("height")  # unset stays unset: the generator's default applies
    bare = convert.direct_generator_request(gateway_pb2.GenerateRequest(prompt="rain"))
    assert bare == generator_pb2.GenerateRequest(prompt="rain")


def test_parameters_by_name_pass_through_for_any_kind() -> None:
    """A generator's own parameters (``strength``, …) need nothing from the gateway: the map is passed on."""
    options = gateway_pb2.GeneratorOverrides(steps=3, params={"strength": 0.6, "tiles": 4.0})
    out = convert.direct_generator_request(gateway_pb2.GenerateRequest(prompt="a cat", options=options))
    assert dict(out.params) == {"strength": 0.6, "tiles": 4.0} and out.steps == 3
    chat = gateway_pb2.ChatRequest(options=gateway_pb2.ChatOptions(generator_overrides={"video": options}))
    video = convert.generator_request(Invocation(OutputModality.VIDEO, "rain"), chat)
    assert dict(video.params) == {"strength": 0.6, "tiles": 4.0}


def test_a_direct_generations_input_image_is_passed_on() -> None:
    image = common_pb2.Media(modality=common_pb2.MODALITY_IMAGE, mime_type="image/png", data=b"\x89PNG")
    out = convert.direct_generator_request(gateway_pb2.GenerateRequest(prompt="at night", image=image))
    assert out.image == image and out.prompt == "at night"
    assert not convert.direct_generator_request(gateway_pb2.GenerateRequest(prompt="x")).HasField("image")
