"""The SDK's direct generation without a server: the request it sends, checks made before any call,
and how its events fold into a ChatResult."""

from __future__ import annotations

from pathlib import Path

import pytest

from modaverse import AsyncClient, Client, GenerationOptions
from modaverse.chat import ResultBuilder, build_generate_request, build_request, generator_overrides, to_event
from modaverse.cli import main
from modaverse_protos.common.v1 import common_pb2
from modaverse_protos.gateway.v1 import gateway_pb2

UNREACHABLE = "127.0.0.1:1"  # any call would fail UNAVAILABLE, not ValueError


@pytest.mark.parametrize(
    ("name", "modality"),
    [("image", common_pb2.MODALITY_IMAGE), ("video", common_pb2.MODALITY_VIDEO), ("audio", common_pb2.MODALITY_AUDIO)],
)
def test_generate_request_carries_the_modality_and_prompt(name: str, modality: int) -> None:
    request = build_generate_request(name, "a red circle")
    assert (request.modality, request.prompt) == (modality, "a red circle")
    assert request.options == gateway_pb2.GeneratorOverrides()


def test_generate_options_become_the_same_overrides_a_chat_sends() -> None:
    opts = GenerationOptions(model="sdxl", seed=3, steps=4, width=64, negative_prompt="blur")
    request = build_generate_request("image", "a fox", opts)
    chat = build_request("hi", generators={"image": opts})
    assert request.options == chat.options.generator_overrides["image"] == generator_overrides(opts)
    assert (request.options.model, request.options.seed, request.options.steps) == ("sdxl", 3, 4)
    assert not request.options.HasField("height")  # None stays unset: the generator's default


@pytest.mark.parametrize("modality", ["text", "IMAGE", "picture", ""])
def test_a_bad_modality_is_a_value_error_before_any_call(modality: str) -> None:
    with pytest.raises(ValueError, match="modality must be 'image', 'video' or 'audio'"):
        build_generate_request(modality, "x")
    with Client(UNREACHABLE, timeout=5) as client:
        with pytest.raises(ValueError, match="modality must be"):
            client.generate(modality, "x")
        with pytest.raises(ValueError, match="modality must be"):
            client.generate(modality, "x", stream=True)  # not deferred to the first event


async def test_async_client_checks_the_modality_before_any_call() -> None:
    async with AsyncClient(UNREACHABLE, timeout=5) as client:
        with pytest.raises(ValueError, match="modality must be"):
            await client.generate("text", "x")
        with pytest.raises(ValueError, match="modality must be"):
            await anext(client.generate_stream("smell", "x"))


def test_generate_events_fold_into_a_result_with_the_one_media() -> None:
    invocation = gateway_pb2.Invocation(index=0, modality=common_pb2.MODALITY_IMAGE, prompt="a cat", model="sd15")
    raw = [
        gateway_pb2.ChatEvent(invocation_started=gateway_pb2.InvocationStarted(invocation=invocation, endpoint="a:1")),
        gateway_pb2.ChatEvent(progress=gateway_pb2.InvocationProgress(index=0, step=1, total_steps=1)),
        gateway_pb2.ChatEvent(media_chunk=gateway_pb2.MediaChunk(index=0, mime_type="image/png", data=b"ab", offset=0)),
        gateway_pb2.ChatEvent(media_chunk=gateway_pb2.MediaChunk(index=0, mime_type="image/png", data=b"cd", offset=2)),
        gateway_pb2.ChatEvent(invocation_done=gateway_pb2.InvocationDone(index=0, seed=5, mime_type="image/png")),
        gateway_pb2.ChatEvent(done=gateway_pb2.Done(elapsed_seconds=1.5)),
    ]
    builder = ResultBuilder()
    for event in raw:
        typed = to_event(event)
        assert typed is not None
        builder.add(typed)
    result = builder.result
    (media,) = result.media
    assert (media.invocation.modality, media.invocation.prompt, media.invocation.model) == ("image", "a cat", "sd15")
    assert (media.data, media.mime_type, media.seed) == (b"abcd", "image/png", 5)
    assert (result.text, result.meta_response, result.errors) == ("", None, [])
    assert result.done is not None
    assert (result.done.prompt_tokens, result.done.completion_tokens, result.done.elapsed_seconds) == (0, 0, 1.5)


def test_cli_generate_refuses_a_modality_it_cannot_generate(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["generate", "text", "hello"])
    assert exit_.value.code == 2
    assert "invalid choice: 'text'" in capsys.readouterr().err


def test_parameters_by_name_are_sent_as_they_are() -> None:
    opts = GenerationOptions(steps=4, params={"strength": 0.6, "eta": 0.0})
    request = build_generate_request("image", "a fox", opts)
    assert dict(request.options.params) == {"strength": 0.6, "eta": 0.0} and request.options.steps == 4
    chat = build_request("hi", generators={"image": opts})
    assert chat.options.generator_overrides["image"] == request.options


def test_cli_generate_takes_any_parameter_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[gateway_pb2.GenerateRequest] = []

    def generate(self: Client, modality: str, prompt: str, *, options: GenerationOptions, **_: object) -> list[object]:
        sent.append(build_generate_request(modality, prompt, options))
        return []

    monkeypatch.setattr(Client, "generate", generate)
    with pytest.raises(SystemExit) as exit_:
        main(["generate", "image", "a fox", "--param", "strength=0.6", "--param", " eta = 0", "--steps", "3"])
    assert exit_.value.code == 0
    assert dict(sent[0].options.params) == {"strength": 0.6, "eta": 0.0} and sent[0].options.steps == 3


@pytest.mark.parametrize("bad", ["strength", "=1", "strength=lots"])
def test_cli_refuses_a_malformed_parameter(bad: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["generate", "image", "a fox", "--param", bad])
    assert exit_.value.code == 2
    assert "expected NAME=NUMBER" in capsys.readouterr().err


def test_an_input_image_goes_as_a_media_item(tmp_path: Path) -> None:
    path = tmp_path / "cat.png"
    path.write_bytes(b"\x89PNG...")
    from_path = build_generate_request("image", "at night", image=path).image
    assert (from_path.modality, from_path.mime_type, from_path.data) == (
        common_pb2.MODALITY_IMAGE,
        "image/png",
        b"\x89PNG...",
    )
    from_bytes = build_generate_request("image", "at night", image=b"raw").image
    assert (from_bytes.mime_type, from_bytes.data) == ("", b"raw")  # the server recognises the format
    assert not build_generate_request("image", "at night").HasField("image")


def test_cli_generate_sends_the_input_image(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "cat.jpg"
    path.write_bytes(b"\xff\xd8\xff")
    sent: list[gateway_pb2.GenerateRequest] = []

    def generate(
        self: Client, modality: str, prompt: str, *, options: GenerationOptions, image: str, **_: object
    ) -> list[object]:
        sent.append(build_generate_request(modality, prompt, options, image))
        return []

    monkeypatch.setattr(Client, "generate", generate)
    with pytest.raises(SystemExit):
        main(["generate", "image", "at night", "--model", "img2img", "--image", str(path), "--param", "strength=0.5"])
    assert (sent[0].image.mime_type, sent[0].image.data, sent[0].options.model) == (
        "image/jpeg",
        b"\xff\xd8\xff",
        "img2img",
    )
