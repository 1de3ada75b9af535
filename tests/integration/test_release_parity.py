"""The full profile serves the published release exactly as it was trained.

A miniature release (tests/integration/release_world.py: sentencepiece tokenizer in the slow layout,
``pytorch_model.pt`` with the release's keys) is converted with ``convert-release`` and served by the
real LLM service. The expectation is computed here, independently of the service's prompt code, by
re-enacting the release's own algorithm (``ModaVerse.embed_prompt_template`` + ``tokenize``): fill the
template by string replacement, split around the media tags, strip each text run, tokenize it with
the raw sentencepiece model, BOS first, each media item as ``<Media>`` row ``</Media>``. The served
token ids (RenderPrompt) must equal it, and the served next-token log-probabilities (Generate with
logprobs) must equal the release's model run on that construction (fp32, within 1e-5).
"""

from __future__ import annotations

import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import pytest_asyncio
import torch

from modaverse_llm.cli import main
from modaverse_llm.service import make_spec
from modaverse_llm.settings import LLMSettings
from modaverse_llm.transformers_backend import TransformersSettings
from modaverse_protos.common.v1 import common_pb2
from modaverse_protos.llm.v1 import llm_pb2, llm_pb2_grpc
from modaverse_runtime.tensors import from_numpy

from .in_process import InProcessServer, serve
from .release_world import HIDDEN, IMAGEBIND_DIM, SLOW_FILES, ReleaseWorld, build_release_world, release_model

asyncio_test = pytest.mark.asyncio(loop_scope="module")

# assets/prompts/prompt_template.txt of the release, byte for byte.
RELEASE_TEMPLATE = "### Human: {media} {instruction}\n### Assistant:"
MEDIA_TAG = re.compile(r"<(image|audio|video)>(.+?)</\1>")  # modaverse.utils.split_media
MODALITY = {"image": common_pb2.MODALITY_IMAGE, "audio": common_pb2.MODALITY_AUDIO, "video": common_pb2.MODALITY_VIDEO}

Position = int | tuple[str, int]  # a token id, or ("row", index of the media item)


def release_sequence(world: ReleaseWorld, instruction: str, media: list[str]) -> list[Position]:
    """The release's construction for one user turn, from its algorithm (not from our code)."""
    sp = world.sentencepiece()
    tags = "".join(f"<{kind}>item{i}.bin</{kind}>" for i, kind in enumerate(media))
    prompt = RELEASE_TEMPLATE.replace("{media}", tags).replace("{instruction}", instruction)
    sequence: list[Position] = [sp.bos_id()]
    last, item = 0, 0
    for match in MEDIA_TAG.finditer(prompt):
        sequence += sp.encode(prompt[last : match.start()].strip()) if last < match.start() else []
        sequence += [world.added_id("<Media>"), ("row", item), world.added_id("</Media>")]
        item, last = item + 1, match.end()
    if last < len(prompt):
        sequence += sp.encode(prompt[last:].strip())
    return sequence


def feature_rows(count: int) -> list[np.ndarray[Any, Any]]:
    """ImageBind-sized features projected by the release's linear_proj (one row per item)."""
    g = np.random.default_rng(7)
    return [g.standard_normal((1, IMAGEBIND_DIM)).astype(np.float32) for _ in range(count)]


def projected(world: ReleaseWorld, features: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    w, b = world.state["linear_proj.weight"], world.state["linear_proj.bias"]
    return (torch.from_numpy(features) @ w.T + b).numpy().astype(np.float32)


def user_message(world: ReleaseWorld, instruction: str, media: list[str]) -> llm_pb2.Message:
    """Our contract in the release's order: every media item, then the instruction."""
    segments = [
        llm_pb2.Segment(
            embeddings=llm_pb2.EmbeddingBlock(
                modality=MODALITY[kind],
                rows=from_numpy(projected(world, f)),
            )
        )
        for kind, f in zip(media, feature_rows(len(media)), strict=True)
    ]
    if instruction:
        segments.append(llm_pb2.Segment(text=instruction))
    return llm_pb2.Message(role=llm_pb2.ROLE_USER, segments=segments)


def served_sequence(rendered: llm_pb2.RenderPromptResponse) -> list[Position]:
    out: list[Position] = []
    item = 0
    for piece in rendered.pieces:
        if piece.WhichOneof("content") == "tokens":
            out += list(piece.tokens.ids)
        else:
            out += [("row", item)] * piece.media.rows
            item += 1
    return out


def reference_logprobs(world: ReleaseWorld, model: Any, sequence: list[Position], media: list[str]) -> torch.Tensor:
    """The release's model on the release's construction: embed_tokens rows and projected media."""
    rows = [torch.from_numpy(projected(world, f)) for f in feature_rows(len(media))]
    embed = model.LLM.get_input_embeddings()
    parts = [rows[p[1]] if isinstance(p, tuple) else embed(torch.tensor([p])) for p in sequence]
    with torch.no_grad():
        logits = model.LLM(inputs_embeds=torch.cat(parts)[None]).logits[0, -1]
    return torch.log_softmax(logits.double(), dim=-1)


CASES = [
    pytest.param("Describe a red circle.", [], id="text-only"),
    pytest.param("What is in this image?", ["image"], id="one-image"),
    pytest.param("Draw the animal you hear.", ["audio"], id="one-audio"),
    pytest.param("Tell me what happens in the clip.", ["video"], id="one-video"),
    pytest.param("Make a picture of the sound and the scene.", ["image", "audio"], id="image+audio"),
    pytest.param("  Compare  them:\nwhich is loud?  ", ["video", "image", "audio"], id="several-items"),
    pytest.param("", ["image"], id="media-only"),
    pytest.param("Ünïcode ✓ and digits 2024 — fine?", ["audio"], id="byte-fallback"),
]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> ReleaseWorld:
    return build_release_world(tmp_path_factory.mktemp("release"))


def convert(world: ReleaseWorld, release: Path, out: Path) -> Path:
    with pytest.raises(SystemExit) as code:
        main(["convert-release", "--release", str(release), "--base", str(world.vicuna), "--out", str(out)])
    assert code.value.code == 0
    return out


def fast_layout_release(world: ReleaseWorld, folder: Path) -> Path:
    """The same release with its tokenizer re-saved by transformers (tokenizer.json, no slow files)."""
    from transformers import AutoTokenizer

    shutil.copytree(world.release, folder)
    tokenizer = AutoTokenizer.from_pretrained(str(world.release))
    for name in (*SLOW_FILES, "added_tokens.json"):
        (folder / name).unlink()
    tokenizer.save_pretrained(str(folder))
    assert (folder / "tokenizer.json").is_file() and not (folder / "tokenizer.model").exists()
    return folder


def slow_layout_base(converted: Path, folder: Path, world: ReleaseWorld) -> Path:
    """The converted base folder with the release's own slow tokenizer files instead of transformers'."""
    shutil.copytree(converted / "base", folder)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json"):
        (folder / name).unlink(missing_ok=True)
    for name in (*SLOW_FILES, "added_tokens.json"):
        shutil.copyfile(world.release / name, folder / name)
    return folder


Running = InProcessServer["llm_pb2_grpc.LLMServiceAsyncStub", LLMSettings]


@pytest_asyncio.fixture(loop_scope="module", scope="module", params=["slow-release", "fast-release", "slow-base"])
async def served(
    request: pytest.FixtureRequest, world: ReleaseWorld, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Running]:
    """The LLM service on the converted release; three tokenizer layouts on the way in."""
    tmp = tmp_path_factory.mktemp(request.param)
    if request.param == "fast-release":
        root = convert(world, fast_layout_release(world, tmp / "release"), tmp / "converted")
    else:
        root = convert(world, world.release, tmp / "converted")
    base = slow_layout_base(root, tmp / "slow-base", world) if request.param == "slow-base" else root / "base"
    settings: LLMSettings = TransformersSettings(
        host="127.0.0.1",
        port=0,
        profile="full",
        base_model=str(base),
        adapters={"default": root / "adapters" / "default"},
        dtype="float32",
        torch_threads=1,
    )
    running = await serve(make_spec(settings), settings, llm_pb2_grpc.LLMServiceStub)
    yield running
    await running.stop()


@pytest.fixture(scope="module")
def reference_model(world: ReleaseWorld) -> Any:
    return release_model(world)


@pytest.mark.parametrize(("instruction", "media"), CASES)
@asyncio_test
async def test_served_prompt_is_the_release_construction(
    served: Running, world: ReleaseWorld, instruction: str, media: list[str]
) -> None:
    request = llm_pb2.GenerateRequest(messages=[user_message(world, instruction, media)])
    rendered = await served.stub.RenderPrompt(request)
    expected = release_sequence(world, instruction, media)
    assert served_sequence(rendered) == expected
    assert rendered.length == len(expected)
    assert [p.media.modality for p in rendered.pieces if p.WhichOneof("content") == "media"] == [
        MODALITY[k] for k in media
    ]


@asyncio_test
async def test_text_only_prompt_keeps_the_templates_double_space(served: Running, world: ReleaseWorld) -> None:
    request = llm_pb2.GenerateRequest(messages=[user_message(world, "hello", [])])
    rendered = await served.stub.RenderPrompt(request)
    tokens = [t for p in rendered.pieces for t in p.tokens.tokens]
    assert tokens[:5] == ["<s>", "▁###", "▁Human", ":", "▁"]  # the second space: its own "▁" token
    assert "### Human:  hello\n### Assistant:" in rendered.text


@asyncio_test
async def test_no_whitespace_token_touches_a_media_block(served: Running, world: ReleaseWorld) -> None:
    request = llm_pb2.GenerateRequest(messages=[user_message(world, "Draw it.", ["image"])])
    rendered = await served.stub.RenderPrompt(request)
    tokens = [t for p in rendered.pieces if p.WhichOneof("content") == "tokens" for t in p.tokens.tokens]
    start, end = tokens.index("<Media>"), tokens.index("</Media>")
    assert tokens[start - 1] == ":"  # "### Human:" stripped: no "▁" before the frame
    assert tokens[end + 1] != "▁" and tokens[end + 1].startswith("▁D")  # the instruction's own dummy prefix
    assert "### Human:<Media><image rows=1></Media> Draw it.\n### Assistant:" in rendered.text


@pytest.mark.parametrize(("instruction", "media"), CASES)
@asyncio_test
async def test_served_logprobs_equal_the_release_model(
    served: Running, world: ReleaseWorld, reference_model: Any, instruction: str, media: list[str]
) -> None:
    sampling = llm_pb2.SamplingParams(max_tokens=1, temperature=0.0, logprobs=True, top_logprobs=20)
    request = llm_pb2.GenerateRequest(messages=[user_message(world, instruction, media)], sampling=sampling)
    entries = [e async for response in served.stub.Generate(request) for e in response.logprobs]
    assert len(entries) == 1
    expected = reference_logprobs(world, reference_model, release_sequence(world, instruction, media), media)
    want = torch.topk(expected, 20)
    got_ids = [t.token_id for t in entries[0].top]
    got = torch.tensor([t.logprob for t in entries[0].top], dtype=torch.float64)
    assert got_ids == want.indices.tolist()
    torch.testing.assert_close(got, want.values, rtol=0, atol=1e-5)
    assert entries[0].chosen.token_id == got_ids[0]  # greedy
    assert float(want.values[0] - want.values[-1]) > 0.5  # a peaked distribution: the check has teeth


@asyncio_test
async def test_multi_turn_renders_earlier_answers_as_the_training_target(served: Running, world: ReleaseWorld) -> None:
    """Our extension (docs/llm.md): an assistant turn is its text then " ###", tokenized as one run,
    as the release tokenized its training target; each user turn is the release's construction."""
    from transformers import AutoTokenizer

    answer = "Modality: [IMAGE] Prompt: a red circle"
    first, second = user_message(world, "Draw a circle.", []), user_message(world, "Now a sound.", ["image"])
    reply = llm_pb2.Message(role=llm_pb2.ROLE_ASSISTANT, segments=[llm_pb2.Segment(text=f" {answer}\n")])
    sampling = llm_pb2.SamplingParams(max_tokens=8)  # the default 246 would not leave room for turn 1
    rendered = await served.stub.RenderPrompt(
        llm_pb2.GenerateRequest(messages=[first, reply, second], sampling=sampling)
    )
    assert rendered.truncated_messages == 0
    tokenizer = AutoTokenizer.from_pretrained(str(world.release))
    target = tokenizer(answer + " ###", add_special_tokens=False).input_ids
    turn1 = release_sequence(world, "Draw a circle.", [])
    turn2 = release_sequence(world, "Now a sound.", ["image"])[1:]  # one BOS, at the very start
    assert served_sequence(rendered) == [*turn1, *target, *turn2]
    assert world.added_id("[IMAGE]") in target  # the flag is the added token, as trained


@asyncio_test
async def test_a_tokenizer_without_the_media_tokens_is_refused(world: ReleaseWorld, tmp_path: Path) -> None:
    """Vicuna's own tokenizer has no <Media>: serving it would silently turn the frame into <unk>."""
    from modaverse_llm.transformers_backend import TransformersBackend
    from modaverse_runtime.errors import FailedPrecondition

    backend = TransformersBackend(LLMSettings(profile="full", base_model=str(world.vicuna), adapters={}))
    with pytest.raises(FailedPrecondition, match="no <Media> token"):
        backend.load()


@asyncio_test
async def test_render_prompt_rejects_bad_input_like_generate(served: Running) -> None:
    bad = llm_pb2.GenerateRequest(messages=[llm_pb2.Message(role=llm_pb2.ROLE_ASSISTANT)])
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await served.stub.RenderPrompt(bad)
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    wide = np.zeros((1, HIDDEN + 1), np.float32)
    block = llm_pb2.EmbeddingBlock(modality=common_pb2.MODALITY_IMAGE, rows=from_numpy(wide))
    message = llm_pb2.Message(role=llm_pb2.ROLE_USER, segments=[llm_pb2.Segment(embeddings=block)])
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await served.stub.RenderPrompt(llm_pb2.GenerateRequest(messages=[message]))
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT and "hidden size" in (err.value.details() or "")


def run_cli(args: list[str]) -> int:
    with pytest.raises(SystemExit) as code:
        main(args)
    return int(code.value.code or 0)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("swap-added-ids", "added tokens must be ids"),
        ("extra-row", "embedding rows"),
        ("narrow-embeddings", "hidden size"),
        ("tokenizer-without-media", "no <Media> token"),
    ],
)
def test_convert_release_refuses_parts_that_do_not_fit(
    world: ReleaseWorld, tmp_path: Path, damage: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    release = tmp_path / "release"
    shutil.copytree(world.release, release)
    state = dict(world.state)
    if damage == "swap-added-ids":
        added = json.loads((release / "added_tokens.json").read_text())
        added["<Media>"], added["</Media>"] = added["</Media>"], added["<Media>"]
        (release / "added_tokens.json").write_text(json.dumps(added))
    elif damage == "extra-row":
        for key in ("LLM.base_model.model.model.embed_tokens.weight", "LLM.base_model.model.lm_head.weight"):
            state[key] = torch.cat([state[key], state[key][-1:]])
    elif damage == "narrow-embeddings":
        for key in ("LLM.base_model.model.model.embed_tokens.weight", "LLM.base_model.model.lm_head.weight"):
            state[key] = state[key][:, : HIDDEN // 2]
    else:
        (release / "added_tokens.json").unlink()  # Vicuna's own tokenizer: no added tokens at all
    torch.save(state, release / "pytorch_model.pt")
    out = tmp_path / "out"
    assert run_cli(["convert-release", "--release", str(release), "--base", str(world.vicuna), "--out", str(out)]) == 1
    assert message in capsys.readouterr().err
    assert not out.exists() and not list(tmp_path.glob(".release-*"))


def test_verify_release_reports_a_ready_release_and_a_broken_one(
    world: ReleaseWorld, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = convert(world, world.release, tmp_path / "converted")
    assert run_cli(["verify-release", str(root), "--max-tokens", "4"]) == 0
    out = capsys.readouterr().out
    assert "the release is ready to serve" in out and "answer (4 tokens, length)" in out
    assert f"added tokens at {world.vocab}..{world.vocab + 5}" in out and "ImageBind 1024 -> 64" in out
    shutil.rmtree(root / "adaptor")
    assert run_cli(["verify-release", str(root)]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "adaptor_config.json" in out and "1 problem(s)" in out


@asyncio_test
async def test_render_prompt_command_shows_the_served_view(
    served: Running, world: ReleaseWorld, capsys: pytest.CaptureFixture[str]
) -> None:
    import asyncio
    import json

    args = ["Draw it.", "--media", "image", "--max-tokens", "8", "--json"]
    code = await asyncio.to_thread(run_cli, ["render-prompt", "--target", served.target, *args])
    remote = json.loads(capsys.readouterr().out)
    assert code == 0
    assert run_cli(["render-prompt", "--model", served.settings.base_model, *args]) == 0
    offline = json.loads(capsys.readouterr().out)
    assert remote["pieces"] == offline["pieces"]
    assert remote["pieces"][1] == {"media": {"modality": "MODALITY_IMAGE", "rows": 1}}
    assert run_cli(["render-prompt", "--model", served.settings.base_model, "hello"]) == 0
    table = capsys.readouterr().out
    assert "'▁Human'" in table and "'▁'" in table  # whitespace tokens are visible


def test_converted_folder_holds_the_release_parts(world: ReleaseWorld, tmp_path: Path) -> None:
    from modaverse_encoder.adaptor import Adaptor

    root = convert(world, world.release, tmp_path / "converted")
    assert sorted(p.name for p in root.iterdir()) == ["adapters", "adaptor", "base"]
    shared: Any = Adaptor.load(root / "adaptor").layers["shared"]  # what the encoder serves
    assert torch.equal(shared.weight, world.state["linear_proj.weight"])
    assert torch.equal(shared.bias, world.state["linear_proj.bias"])


def test_convert_release_rejects_other_checkpoints(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "release").mkdir()
    torch.save({"foo": torch.zeros(1)}, tmp_path / "release" / "pytorch_model.pt")
    args = ["convert-release", "--release", str(tmp_path / "release"), "--base", str(tmp_path), "--out"]
    assert run_cli([*args, str(tmp_path / "out")]) == 1
    assert "not a ModaVerse release checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@asyncio_test
async def test_the_release_adapter_is_the_default(served: Running) -> None:
    info = await served.stub.Info(llm_pb2.InfoRequest())
    assert [(a.name, a.rank, a.is_default) for a in info.adapters] == [("default", 32, True)]
