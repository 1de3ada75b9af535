from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modaverse_gateway.metaresponse import Invocation, OutputModality, parse_meta_response

IMAGE, VIDEO, AUDIO = OutputModality.IMAGE, OutputModality.VIDEO, OutputModality.AUDIO


@pytest.mark.parametrize(
    ("raw", "answer", "invocations"),
    [
        # the release's format, exactly
        ("Modality: [IMAGE] Prompt: a red circle on white ###", "", [Invocation(IMAGE, "a red circle on white")]),
        ("Modality: [TEXT] Prompt: It is a blue square. ###", "It is a blue square.", []),
        ("Modality: [VIDEO] Prompt: waves at dusk", "", [Invocation(VIDEO, "waves at dusk")]),
        ("Modality: [AUDIO] Prompt: rain on a roof###", "", [Invocation(AUDIO, "rain on a roof")]),
        # case and whitespace
        ("  modality :[ image ]   PROMPT:   a   cat  ", "", [Invocation(IMAGE, "a cat")]),
        ("MODALITY: audio prompt: birdsong", "", [Invocation(AUDIO, "birdsong")]),
        # several flags in one block: same prompt for each (as the release)
        (
            "Modality: [IMAGE] [AUDIO] Prompt: thunder",
            "",
            [Invocation(IMAGE, "thunder"), Invocation(AUDIO, "thunder")],
        ),
        # several blocks, model names, text around them
        (
            "Here you go.\nModality: [IMAGE] Model: sdxl Prompt: a fox\nModality: [AUDIO] Prompt: a fox barking\n"
            "Enjoy!",
            "Here you go.\nEnjoy!",
            [Invocation(IMAGE, "a fox", "sdxl"), Invocation(AUDIO, "a fox barking")],
        ),
        ("[IMAGE] Prompt: no modality word", "", [Invocation(IMAGE, "no modality word")]),
        # missing "Prompt:" (the release crashed): the rest of the block is the prompt
        ("Modality: [IMAGE] a lighthouse", "", [Invocation(IMAGE, "a lighthouse")]),
        # a [TEXT] answer may span lines; a media prompt ends at its line
        ("Modality: [TEXT] Prompt: line one\nline two ###", "line one\nline two", []),
    ],
)
def test_parses(raw: str, answer: str, invocations: list[Invocation]) -> None:
    parsed = parse_meta_response(raw)
    assert parsed.parsed
    assert parsed.raw == raw
    assert parsed.answer == answer
    assert parsed.invocations == invocations


@pytest.mark.parametrize(
    ("raw", "answer", "invocations"),
    [
        # a bracketed flag inside a [TEXT] answer's prose is prose, not a block
        (
            "Modality: [TEXT] Prompt: the tag [IMAGE] marks a picture",
            "the tag [IMAGE] marks a picture",
            [],
        ),
        (
            "Modality: [TEXT] Prompt: A song needs an [AUDIO] track and a [video] clip, too. ###",
            "A song needs an [AUDIO] track and a [video] clip, too.",
            [],
        ),
        ("Modality: [TEXT] Prompt: line one\nsee [IMAGE] [AUDIO] below", "line one\nsee [IMAGE] [AUDIO] below", []),
        # ... but a flag at the start of a later line (after optional whitespace) starts a block
        (
            "Modality: [TEXT] Prompt: here it is\n  [AUDIO] Prompt: purring ###",
            "here it is",
            [Invocation(AUDIO, "purring")],
        ),
        ("Modality: [TEXT] Prompt: here it is\n[IMAGE] a cat", "here it is", [Invocation(IMAGE, "a cat")]),
        # ... as does a flag right after "Modality:", wherever that is
        (
            "Modality: [TEXT] Prompt: here it is Modality: [IMAGE] Prompt: a cat",
            "here it is",
            [Invocation(IMAGE, "a cat")],
        ),
        (
            "Modality: [IMAGE] Prompt: a cat\nModality: [AUDIO] Prompt: purring",
            "",
            [Invocation(IMAGE, "a cat"), Invocation(AUDIO, "purring")],
        ),
        ("  [image] Prompt: a cat", "", [Invocation(IMAGE, "a cat")]),
        # a flag mid-line in text outside blocks is prose too
        (
            "Modality: [IMAGE] Prompt: a cat\nThe [AUDIO] flag was not used.",
            "The [AUDIO] flag was not used.",
            [Invocation(IMAGE, "a cat")],
        ),
    ],
)
def test_block_starts_only_at_line_start_or_after_modality(
    raw: str, answer: str, invocations: list[Invocation]
) -> None:
    parsed = parse_meta_response(raw)
    assert parsed.parsed
    assert parsed.answer == answer
    assert parsed.invocations == invocations


def test_flag_mid_sentence_without_modality_is_not_a_block() -> None:
    parsed = parse_meta_response("Use the [IMAGE] flag for pictures.")
    assert not parsed.parsed
    assert parsed.invocations == []
    assert parsed.answer == "Use the [IMAGE] flag for pictures."


@pytest.mark.parametrize(
    ("raw", "answer", "invocations"),
    [
        # "###" followed by another "Modality:" separates blocks (a backend that does not stop at "###")
        (
            "Modality: [IMAGE] Prompt: a cat ### Modality: [AUDIO] Prompt: a meow ###",
            "",
            [Invocation(IMAGE, "a cat"), Invocation(AUDIO, "a meow")],
        ),
        (
            "Modality: [IMAGE] Prompt: a cat###modality:[VIDEO] Prompt: a cat walking####\n MODALITY : audio "
            "Prompt: a meow",
            "",
            [Invocation(IMAGE, "a cat"), Invocation(VIDEO, "a cat walking"), Invocation(AUDIO, "a meow")],
        ),
        (
            "Modality: [TEXT] Prompt: Here is a cat. ### Modality: [IMAGE] Prompt: a cat ###",
            "Here is a cat.",
            [Invocation(IMAGE, "a cat")],
        ),
        (
            "Modality: [TEXT] Prompt: First. ### Modality: [TEXT] Prompt: Second. ###",
            "First.\nSecond.",
            [],
        ),
        # "###" followed by anything else ends the meta-response there
        (
            "Modality: [IMAGE] Prompt: a cat ### Human: Modality: [AUDIO] Prompt: a meow ###",
            "",
            [Invocation(IMAGE, "a cat")],
        ),
        (
            "Modality: [IMAGE] Prompt: a cat ### Modality: [AUDIO] Prompt: a meow ###\n### Human: draw it "
            "Modality: [VIDEO] Prompt: a dog",
            "",
            [Invocation(IMAGE, "a cat"), Invocation(AUDIO, "a meow")],
        ),
        ("Modality: [TEXT] Prompt: Done. ### [IMAGE] Prompt: a cat", "Done.", []),
        ("Modality: [TEXT] Prompt: Done. ###   ", "Done.", []),
    ],
)
def test_separator_before_another_modality_keeps_blocks(raw: str, answer: str, invocations: list[Invocation]) -> None:
    parsed = parse_meta_response(raw)
    assert parsed.parsed
    assert parsed.answer == answer
    assert parsed.invocations == invocations
    assert "#" not in parsed.answer
    assert all("#" not in inv.prompt for inv in parsed.invocations)


@pytest.mark.parametrize("raw", ["", "   ", "just chatting, no flags", "Modality: [SMELL] Prompt: roses", "###"])
def test_unparsable_falls_back_to_text(raw: str) -> None:
    parsed = parse_meta_response(raw)
    assert not parsed.parsed
    assert parsed.invocations == []
    assert parsed.answer == raw.replace("###", "").strip()


def test_empty_media_prompt_is_dropped() -> None:
    parsed = parse_meta_response("Modality: [IMAGE] Prompt:   ###")
    assert parsed.invocations == []
    assert not parsed.parsed


VALID = st.builds(
    lambda flag, prompt, model: f"Modality: [{flag}] " + (f"Model: {model} " if model else "") + f"Prompt: {prompt}",
    st.sampled_from(["TEXT", "IMAGE", "VIDEO", "AUDIO", "image", "Audio"]),
    st.text(min_size=0, max_size=60),
    st.one_of(st.just(""), st.from_regex(r"[a-z][a-z0-9\-]{0,10}", fullmatch=True)),
)


def _mutate(data: st.DataObject, text: str) -> str:
    ops = data.draw(st.lists(st.tuples(st.integers(0, 3), st.integers(0, max(len(text), 1)), st.text(max_size=5))))
    for op, pos, ins in ops:
        pos = min(pos, len(text))
        if op == 0:
            text = text[:pos] + ins + text[pos:]
        elif op == 1:
            text = text[:pos] + text[pos + len(ins) :]
        elif op == 2:
            text = text[:pos] + text[pos:].swapcase()
        else:
            text = text[:pos] + "###" + text[pos:]
    return text


def _check_invariants(raw: str) -> None:
    parsed = parse_meta_response(raw)
    assert parsed.raw == raw
    assert isinstance(parsed.answer, str)
    for inv in parsed.invocations:
        assert inv.modality in (IMAGE, VIDEO, AUDIO)
        assert inv.prompt.strip() == inv.prompt
        assert inv.prompt
        assert "\n" not in inv.prompt


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=300))
def test_never_raises_on_random_text(raw: str) -> None:
    _check_invariants(raw)


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(VALID, min_size=1, max_size=4), st.data())
def test_never_raises_on_mutated_meta_responses(blocks: list[str], data: st.DataObject) -> None:
    _check_invariants(_mutate(data, " ".join(blocks) + " ###"))


@settings(max_examples=500, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["IMAGE", "VIDEO", "AUDIO"]), st.from_regex(r"[a-z]+( [a-z]+){0,5}", fullmatch=True)),
        min_size=1,
        max_size=4,
    )
)
def test_well_formed_blocks_round_trip(blocks: list[tuple[str, str]]) -> None:
    raw = "\n".join(f"Modality: [{flag}] Prompt: {prompt}" for flag, prompt in blocks) + " ###"
    parsed = parse_meta_response(raw)
    assert [(i.modality.value.upper(), i.prompt) for i in parsed.invocations] == blocks


PROSE_WORD = st.one_of(
    st.from_regex(r"[a-z]{1,8}[.,!?]?", fullmatch=True),
    st.sampled_from(["[IMAGE]", "[audio]", "[ Video ]", "[TEXT]", "[IMAGE] [AUDIO]", "[image],[video]"]),
)


@settings(max_examples=500, deadline=None)
@given(st.lists(PROSE_WORD, min_size=1, max_size=12))
def test_flags_in_text_prose_never_start_blocks(words: list[str]) -> None:
    prose = " ".join(["word", *words])  # the prose does not itself start with a flag
    parsed = parse_meta_response(f"Modality: [TEXT] Prompt: {prose} ###")
    assert parsed.invocations == []
    assert parsed.answer == prose


@settings(max_examples=500, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["IMAGE", "VIDEO", "AUDIO"]), st.from_regex(r"[a-z]+( [a-z]+){0,5}", fullmatch=True)),
        min_size=1,
        max_size=4,
    ),
    st.sampled_from([" ### ", "###", " ###\n", "\n####  "]),
    st.sampled_from(["", " ### Human: more", "###\n### Human: Modality: [IMAGE] Prompt: ignored"]),
)
def test_blocks_separated_by_stops_round_trip(blocks: list[tuple[str, str]], separator: str, tail: str) -> None:
    raw = separator.join(f"Modality: [{flag}] Prompt: {prompt}" for flag, prompt in blocks) + tail
    parsed = parse_meta_response(raw)
    assert [(i.modality.value.upper(), i.prompt) for i in parsed.invocations] == blocks
    assert parsed.answer == ""
