from __future__ import annotations

from pathlib import Path

import pytest

from modaverse_gateway.metaresponse import Invocation, OutputModality
from modaverse_gateway.routes import RoutingTable, load_routes
from modaverse_gateway.settings import GatewaySettings
from modaverse_gateway.validation import validate_chat
from modaverse_protos.common.v1 import common_pb2
from modaverse_protos.gateway.v1 import gateway_pb2
from modaverse_runtime.errors import FailedPrecondition, InvalidArgument

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
