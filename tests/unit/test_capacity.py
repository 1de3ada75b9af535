"""The admission and queue limits' defaults fit together as docs/reliability.md ("Capacity: admission and
queue limits") says, and its table gives the code's defaults: a change to one default that breaks a relation,
or leaves the table behind, fails here."""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Any

import pytest
from pydantic_settings import BaseSettings

from modaverse import Client
from modaverse.client import DEFAULT_RETRY
from modaverse_encoder.settings import EncoderSettings
from modaverse_gateway.settings import GatewaySettings
from modaverse_generators.settings import GeneratorSettings
from modaverse_llm.transformers_backend import TransformersSettings
from modaverse_runtime.settings import ServerSettings
from modaverse_web.settings import WebSettings

DOC = Path(__file__).resolve().parents[2] / "docs" / "reliability.md"
SETTINGS: dict[str, type[BaseSettings]] = {
    "every server": ServerSettings,
    "web": WebSettings,
    "gateway": GatewaySettings,
    "encoder": EncoderSettings,
    "llm": TransformersSettings,  # the LLM's shared settings and the default backend's own
    "generator": GeneratorSettings,
}


def default(cls: type[BaseSettings], name: str) -> Any:
    """The class's default, whatever MODAVERSE_* variables this process has."""
    return cls.model_fields[name].default


def sdk_default(name: str) -> Any:
    return inspect.signature(Client.__init__).parameters[name].default


CHATS = default(GatewaySettings, "max_concurrent_chats")


def test_one_gateways_admitted_chats_fit_every_queue_behind_it() -> None:
    media = default(GatewaySettings, "max_media_items")
    # encoder: a chat's media in one request, and every admitted chat's media in one replica's queue of a kind
    assert default(EncoderSettings, "max_items_per_request") >= media
    assert default(EncoderSettings, "max_queue") >= CHATS * media
    # llm: one request per chat, waiting or decoding; its KV budget follows the batch and the context
    assert default(TransformersSettings, "max_queue") + default(TransformersSettings, "max_batch_size") >= CHATS
    assert default(TransformersSettings, "max_kv_tokens") == 0  # max_batch_size x the context length
    # generators: one invocation per route per chat (the release's meta-response names a modality once)
    assert default(GeneratorSettings, "max_queue") + default(GeneratorSettings, "batch_max_items") >= CHATS
    # gRPC's own cap on every server: one call per chat to each backend at a time
    assert default(ServerSettings, "max_concurrent_rpcs") >= CHATS


def test_the_front_door_admits_no_more_than_the_gateway() -> None:
    assert default(WebSettings, "max_concurrent_rpcs") <= CHATS


def test_deadlines_agree_and_a_busy_wait_leaves_the_work_half_of_them() -> None:
    deadline = default(GatewaySettings, "default_deadline_s")
    assert default(WebSettings, "request_timeout_s") == sdk_default("timeout") == deadline
    assert 0 < default(GatewaySettings, "busy_wait_s") <= deadline / 2


def _capacity_table() -> list[list[str]]:
    section = DOC.read_text().split("## Capacity: admission and queue limits\n", 1)[1].split("\n## ", 1)[0]
    rows = [line.strip("|").split("|") for line in section.splitlines() if line.startswith("| ")]
    return [[cell.strip() for cell in row] for row in rows[1:]]  # past the header


def _documented(row: list[str]) -> tuple[Any, float]:
    """(the code's default, the table's) for one row: where, limit, setting, default, beyond it."""
    where, _, setting, written, _ = row
    value = float(re.findall(r"`([\d.]+)`", written)[0])
    if where == "SDK":
        name = re.findall(r"(\w+)=\)+`$", setting)[0]
        return (DEFAULT_RETRY.max_attempts if name == "max_attempts" else sdk_default(name)), value
    name = re.fullmatch(r"`MODAVERSE_(\w+)`", setting)
    assert name is not None, setting
    return default(SETTINGS[where], name[1].lower()), value


@pytest.mark.parametrize("row", _capacity_table(), ids=lambda row: f"{row[0]}:{row[2]}")
def test_the_capacity_table_gives_the_code_defaults(row: list[str]) -> None:
    code, written = _documented(row)
    assert float(code) == written


def test_the_capacity_table_lists_every_queue_and_admission_limit() -> None:
    listed = {(row[0], row[2]) for row in _capacity_table()}
    for where in ("encoder", "llm", "generator"):
        assert (where, "`MODAVERSE_MAX_QUEUE`") in listed
    assert ("gateway", "`MODAVERSE_MAX_CONCURRENT_CHATS`") in listed
    assert ("gateway", "`MODAVERSE_BUSY_WAIT_S`") in listed
    assert ("web", "`MODAVERSE_MAX_CONCURRENT_RPCS`") in listed
