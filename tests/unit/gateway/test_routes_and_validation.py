from __future__ import annotations

from pathlib import Path

import pytest

from modaverse_gateway.metaresponse import MAX_PROMPT_CHARS, Invocation, OutputModality
from modaverse_gateway.routes import RoutingTable, load_routes
from modaverse_gateway.settings import GatewaySettings
from modaverse_gateway.validation import generate_prompt_limit, validate_chat, validate_generate
from modaverse_protos.common.v1 import common_pb2
from modaverse_protos.gateway.v1 import gateway_pb2
from modaverse_runtime.errors import FailedPrecondition, InvalidArgument, NotFound

IMAGE, VIDEO, AUDIO = OutputModality.IMAGE, OutputModality.VIDEO, OutputModality.AUDIO

ROUTES = """
generators:
  sd15: {modality: image, endpoints: ["a:1", "b:2"], default: true}
  sdxl: {modality: image, endpoints: "dns:///sdxl:50061"}
  t2v: {modality: video, endpoints: ["c:3"]}
"""


@pytest.fixture
def table() -> RoutingTable:
    return load_routes(None, ROUTES)


def test_routes_resolve_defaults_and_named_models(table: RoutingTable) -> None:
    assert table.resolve(IMAGE).name == "sd15"
    assert table.resolve(IMAGE, "sdxl").endpoints == ("dns:///sdxl:50061",)
    assert table.resolve(VIDEO).name == "t2v"  # the only video route is its default
    with pytest.raises(InvalidArgument, match="unknown image model 'flux'; routable: sd15, sdxl"):
        table.resolve(IMAGE, "flux")
    with pytest.raises(InvalidArgument, match="generates video, not image"):
        table.resolve(IMAGE, "t2v")
    with pytest.raises(InvalidArgument, match="no audio generator"):
        table.resolve(AUDIO)


def test_routes_file_json(tmp_path: Path) -> None:
    path = tmp_path / "routes.json"
    path.write_text('{"generators": {"ldm": {"modality": "audio", "endpoints": ["x:1"]}}}')
    assert load_routes(path, "").resolve(AUDIO).name == "ldm"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("generators: [1, 2]", "map keyed by generator name"),
        ("generators: {x: {modality: smell, endpoints: [a:1]}}", "needs modality"),
        ("generators: {x: {modality: image}}", "endpoints"),
        ("generators: {x: {modality: image, endpoints: [a:1], colour: red}}", "unknown keys"),
        (
            "generators: {x: {modality: image, endpoints: [a:1], default: true},"
            " y: {modality: image, endpoints: [b:1], default: true}}",
            "several default",
        ),
        ("generators: {x: [", "not valid YAML"),
    ],
)
def test_bad_routes_fail_at_start(text: str, fragment: str) -> None:
    with pytest.raises(FailedPrecondition, match=fragment):
        load_routes(None, text)


def chat(*turns: gateway_pb2.Turn, **options: object) -> gateway_pb2.ChatRequest:
    return gateway_pb2.ChatRequest(turns=list(turns), options=gateway_pb2.ChatOptions(**options))  # type: ignore[arg-type]


def user(text: str = "", *media: common_pb2.Media) -> gateway_pb2.Turn:
    return gateway_pb2.Turn(role=gateway_pb2.ROLE_USER, text=text, media=list(media))


PNG = common_pb2.Media(modality=common_pb2.MODALITY_IMAGE, data=b"\x89PNG")


@pytest.mark.parametrize(
    ("request_", "fragment"),
    [
        (chat(), "no turns"),
        (chat(user("")), "no text and no media"),
        (chat(user("hi"), gateway_pb2.Turn(role=gateway_pb2.ROLE_ASSISTANT, text="yo")), "last turn"),
        (chat(user("x" * 101)), "characters of text"),
        (chat(user("hi", *[PNG] * 3)), "media items"),
        (chat(user("hi", common_pb2.Media(modality=common_pb2.MODALITY_TEXT, data=b"x"))), "not supported"),
        (chat(user("hi", common_pb2.Media(modality=common_pb2.MODALITY_IMAGE, uri="s3://x"))), "uri"),
        (chat(user("hi", common_pb2.Media(modality=common_pb2.MODALITY_IMAGE, data=b"x" * 2048))), "bytes"),
        (chat(user("hi"), generator_overrides={"smell": gateway_pb2.GeneratorOverrides()}), "not one of"),
        (chat(user("hi"), generator_overrides={"image": gateway_pb2.GeneratorOverrides(model="flux")}), "unknown"),
    ],
)
def test_bad_chats_are_invalid_argument(table: RoutingTable, request_: gateway_pb2.ChatRequest, fragment: str) -> None:
    settings = GatewaySettings(max_text_chars=100, max_media_items=2, max_media_mb=1 / 1024)
    with pytest.raises(InvalidArgument, match=fragment):
        validate_chat(request_, settings, table)


def test_good_chat_passes(table: RoutingTable) -> None:
    validate_chat(
        chat(user("draw it", PNG), generator_overrides={"image": gateway_pb2.GeneratorOverrides(model="sdxl")}),
        GatewaySettings(),
        table,
    )
    assert Invocation(IMAGE, "x").model == ""


def generate(
    prompt: str = "a red circle", modality: int = common_pb2.MODALITY_IMAGE, **options: object
) -> gateway_pb2.GenerateRequest:
    return gateway_pb2.GenerateRequest(
        modality=modality,  # type: ignore[arg-type]
        prompt=prompt,
        options=gateway_pb2.GeneratorOverrides(**options),  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(
    ("request_", "fragment"),
    [
        (generate(modality=common_pb2.MODALITY_TEXT), "MODALITY_TEXT cannot be generated"),
        (generate(modality=common_pb2.MODALITY_UNSPECIFIED), "MODALITY_UNSPECIFIED cannot be generated"),
        (generate(modality=9), "modality 9 cannot be generated"),
        (generate(""), "prompt is empty"),
        (generate(" \n\t"), "prompt is empty"),
        (generate("x" * 101), "101 characters; the limit is 100"),
        (generate(model="t2v"), "generates video, not image"),
        (generate(modality=common_pb2.MODALITY_AUDIO), "no audio generator"),
    ],
)
def test_bad_generations_are_invalid_argument(
    table: RoutingTable, request_: gateway_pb2.GenerateRequest, fragment: str
) -> None:
    with pytest.raises(InvalidArgument, match=fragment):
        validate_generate(request_, GatewaySettings(max_text_chars=100), table)


def test_generate_names_an_unknown_model_not_found(table: RoutingTable) -> None:
    # NOT_FOUND, unlike a chat (where an unknown name in the options is INVALID_ARGUMENT).
    with pytest.raises(NotFound, match="unknown image model 'flux'; routable: sd15, sdxl"):
        validate_generate(generate(model="flux"), GatewaySettings(), table)
    with pytest.raises(InvalidArgument):
        validate_chat(
            chat(user("hi"), generator_overrides={"image": gateway_pb2.GeneratorOverrides(model="flux")}),
            GatewaySettings(),
            table,
        )


def test_generate_routes_by_model_or_the_modalitys_default(table: RoutingTable) -> None:
    settings = GatewaySettings()
    assert validate_generate(generate(), settings, table).name == "sd15"
    assert validate_generate(generate(model="sdxl"), settings, table).name == "sdxl"
    assert validate_generate(generate(modality=common_pb2.MODALITY_VIDEO), settings, table).name == "t2v"


def test_generate_prompt_limit_is_the_chat_text_limit_and_the_invocation_prompt_limit(table: RoutingTable) -> None:
    assert generate_prompt_limit(GatewaySettings(max_text_chars=100)) == 100
    assert generate_prompt_limit(GatewaySettings()) == MAX_PROMPT_CHARS  # below the default 16k text limit
    settings = GatewaySettings()
    validate_generate(generate("x" * MAX_PROMPT_CHARS), settings, table)
    with pytest.raises(InvalidArgument, match="characters; the limit is"):
        validate_generate(generate("x" * (MAX_PROMPT_CHARS + 1)), settings, table)


def test_an_input_image_is_bytes_within_the_media_limit(table: RoutingTable) -> None:
    def with_image(media: common_pb2.Media) -> gateway_pb2.GenerateRequest:
        request = generate(model="sdxl")
        request.image.CopyFrom(media)
        return request

    settings = GatewaySettings(max_media_mb=0.001)  # 1048 bytes
    assert validate_generate(with_image(common_pb2.Media(data=b"x" * 1048)), settings, table).name == "sdxl"
    with pytest.raises(InvalidArgument, match="image: 1049 bytes; the limit is 1048"):
        validate_generate(with_image(common_pb2.Media(data=b"x" * 1049)), settings, table)
    for media in (common_pb2.Media(uri="https://x/cat.png"), common_pb2.Media(data=b"")):
        with pytest.raises(InvalidArgument, match="image: send the image bytes in 'data'"):
            validate_generate(with_image(media), settings, table)
