"""Unit tests for hybridsearch.text.chunking (no database needed)."""

from __future__ import annotations

import itertools
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hybridsearch.errors import InvalidInputError
from hybridsearch.text.chunking import Chunk, chunk_text, estimate_tokens, split_sentences

ENGLISH = (
    "Hybrid search combines dense vectors with keyword matching. "
    "The two result lists are fused with reciprocal rank fusion! "
    "Does a cross-encoder then rerank the best candidates? "
    "It does, and precision improves on short queries. "
)
CHINESE = "向量数据库很快。重排模型很准！你好吗？"


def sentences_of(text: str) -> list[str]:
    return [text[start:end] for start, end in split_sentences(text)]


def assert_well_formed(text: str, chunks: list[Chunk], max_tokens: int) -> None:
    """Offsets are exact, chunks are stripped, in budget, ordered and numbered 0..n-1."""
    assert [chunk.ordinal for chunk in chunks] == list(range(len(chunks)))
    for chunk in chunks:
        assert chunk.text == text[chunk.start : chunk.end]
        assert chunk.text == chunk.text.strip() != ""
        assert estimate_tokens(chunk.text) <= max_tokens
    for previous, current in itertools.pairwise(chunks):
        assert previous.start < current.start
        assert previous.end < current.end


def assert_gapless(text: str, chunks: list[Chunk]) -> None:
    """Chunks together cover every non-whitespace character, up to the end of the text."""
    covered = 0
    for chunk in chunks:
        assert text[covered : chunk.start].strip() == ""
        covered = max(covered, chunk.end)
    assert text[covered:].strip() == ""


# --- estimate_tokens -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", 0),
        (" \n\t ", 0),
        ("the", 1),
        ("search", 1),
        ("database", 2),
        ("internationalization", 4),
        ("hello, world!", 4),
        ("向量数据库", 5),
        ("向量，数据库。", 7),
        ("我们使用PostgreSQL存储", 8),
        ("3.14", 3),
        ("snake_case", 3),
    ],
)
def test_estimate_tokens(text: str, expected: int) -> None:
    assert estimate_tokens(text) == expected


def test_estimate_tokens_is_about_one_and_a_bit_per_english_word() -> None:
    words = len(ENGLISH.split())
    assert words <= estimate_tokens(ENGLISH) <= 2 * words


# --- split_sentences -------------------------------------------------------------------


def test_split_sentences_english() -> None:
    assert sentences_of(ENGLISH) == [
        "Hybrid search combines dense vectors with keyword matching.",
        "The two result lists are fused with reciprocal rank fusion!",
        "Does a cross-encoder then rerank the best candidates?",
        "It does, and precision improves on short queries.",
    ]


def test_split_sentences_chinese_terminators() -> None:
    assert sentences_of(CHINESE) == ["向量数据库很快。", "重排模型很准！", "你好吗？"]


def test_split_sentences_other_cjk_terminators() -> None:
    assert sentences_of("第一句；第二句……第三句") == ["第一句；", "第二句……", "第三句"]


def test_closing_quotes_stay_with_their_sentence() -> None:
    assert sentences_of("他说：“你好。”然后走了。「行！」好的") == [
        "他说：“你好。”",
        "然后走了。",
        "「行！」",
        "好的",
    ]
    assert sentences_of('He said "Stop." Then he left.') == ['He said "Stop."', "Then he left."]


def test_split_sentences_mixed_chinese_english() -> None:
    text = "我们使用PostgreSQL存储向量。It is fast. 检索很准确！Reranking helps too?"
    assert sentences_of(text) == [
        "我们使用PostgreSQL存储向量。",
        "It is fast.",
        "检索很准确！",
        "Reranking helps too?",
    ]


@pytest.mark.parametrize(
    "sentence",
    [
        "Pi is roughly 3.14 and e is 2.718 here.",
        "Dr. Smith met Mrs. Jones yesterday.",
        "Use a fast index, e.g. HNSW or IVF.",
        "Books by J. R. R. Tolkien sell well.",
        "Wait... what happened?",
        "Really? yes, really.",
    ],
)
def test_split_sentences_does_not_break_inside(sentence: str) -> None:
    assert sentences_of(sentence) == [sentence]


def test_split_sentences_breaks_before_digit_and_at_end() -> None:
    assert sentences_of("It costs 3. 4 of them cost more.") == [
        "It costs 3.",
        "4 of them cost more.",
    ]


def test_split_sentences_breaks_at_newlines_and_blank_lines() -> None:
    text = "  Title line\nfirst paragraph goes on\n\n\r\nsecond paragraph  \n"
    assert sentences_of(text) == ["Title line", "first paragraph goes on", "second paragraph"]


def test_split_sentences_spans_are_stripped_and_cover_all_text() -> None:
    text = " \n" + ENGLISH + "\n\n" + CHINESE + "  "
    spans = split_sentences(text)
    assert all(text[start:end] == text[start:end].strip() != "" for start, end in spans)
    gaps = list(
        zip(
            [0, *(end for _, end in spans)],
            [*(start for start, _ in spans), len(text)],
            strict=True,
        )
    )
    assert all(gap_start <= gap_end for gap_start, gap_end in gaps)
    assert all(text[gap_start:gap_end].strip() == "" for gap_start, gap_end in gaps)


def test_split_sentences_of_blank_text_is_empty() -> None:
    assert split_sentences("") == []
    assert split_sentences(" \n\t\u3000 ") == []


# --- chunk_text ------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "   ", "\n\n\t \u3000"])
def test_empty_text_has_no_chunks(text: str) -> None:
    assert chunk_text(text) == []


def test_short_text_is_one_chunk_equal_to_stripped_text() -> None:
    text = "\n  " + ENGLISH + CHINESE + "  \n"
    assert chunk_text(text) == [
        Chunk(ordinal=0, text=text.strip(), start=3, end=len(text.rstrip())),
    ]


@pytest.mark.parametrize(("max_tokens", "overlap_tokens"), [(1, 0), (12, 0), (30, 10), (64, 63)])
def test_long_document_chunks_are_within_budget_and_cover_everything(
    max_tokens: int, overlap_tokens: int
) -> None:
    text = (ENGLISH + "\n\n" + CHINESE) * 20
    chunks = chunk_text(text, max_tokens=max_tokens, overlap_tokens=overlap_tokens)
    assert len(chunks) > 1
    assert_well_formed(text, chunks, max_tokens)
    assert_gapless(text, chunks)


def test_every_sentence_appears_whole_in_some_chunk_in_order() -> None:
    text = (ENGLISH + CHINESE + "\n") * 10
    chunks = chunk_text(text, max_tokens=40, overlap_tokens=10)
    positions = []
    for start, end in split_sentences(text):
        holders = [chunk.ordinal for chunk in chunks if chunk.start <= start and end <= chunk.end]
        assert holders, text[start:end]
        positions.append(holders[0])
    assert positions == sorted(positions)
    assert positions[-1] == len(chunks) - 1


def test_consecutive_chunks_overlap_by_whole_trailing_sentences() -> None:
    text = " ".join(f"Sentence number {i} is short." for i in range(30))
    sentence_starts = {start for start, _ in split_sentences(text)}
    sentence_ends = {end for _, end in split_sentences(text)}
    chunks = chunk_text(text, max_tokens=30, overlap_tokens=12)
    assert len(chunks) > 2
    for previous, current in itertools.pairwise(chunks):
        assert previous.start < current.start < previous.end < current.end
        assert current.start in sentence_starts
        assert current.end in sentence_ends
        shared = text[current.start : previous.end]
        assert 0 < estimate_tokens(shared) <= 12
        assert current.text.startswith(shared)


def test_zero_overlap_gives_disjoint_chunks() -> None:
    text = " ".join(f"Sentence number {i} is short." for i in range(30))
    chunks = chunk_text(text, max_tokens=30, overlap_tokens=0)
    assert len(chunks) > 2
    for previous, current in itertools.pairwise(chunks):
        assert previous.end < current.start


def test_chinese_chunks_split_at_sentence_ends() -> None:
    text = CHINESE * 5
    chunks = chunk_text(text, max_tokens=16, overlap_tokens=8)
    assert_well_formed(text, chunks, 16)
    assert_gapless(text, chunks)
    assert all(chunk.text[-1] in "。！？" for chunk in chunks)
    assert chunks[0].text == "向量数据库很快。重排模型很准！"


def test_mixed_text_offsets_are_exact() -> None:
    text = "我们使用PostgreSQL存储向量。It is fast.\n检索很准确！Reranking helps too? 好。" * 7
    chunks = chunk_text(text, max_tokens=20, overlap_tokens=5)
    assert_well_formed(text, chunks, 20)
    assert_gapless(text, chunks)


def test_decimal_number_is_not_split() -> None:
    text = "The value of pi is about 3.14 in most textbooks. Another sentence follows here."
    chunks = chunk_text(text, max_tokens=16, overlap_tokens=0)
    assert [chunk.text for chunk in chunks] == [
        "The value of pi is about 3.14 in most textbooks.",
        "Another sentence follows here.",
    ]


def test_giant_english_sentence_is_split_at_word_boundaries() -> None:
    text = " ".join(f"word{i}" for i in range(2000))
    chunks = chunk_text(text, max_tokens=50, overlap_tokens=10)
    assert len(chunks) > 10
    assert_well_formed(text, chunks, 50)
    assert_gapless(text, chunks)
    assert chunks[-1].end == len(text)
    for chunk in chunks:
        assert chunk.start == 0 or text[chunk.start - 1] == " "
        assert chunk.end == len(text) or text[chunk.end] == " "


def test_giant_cjk_run_is_split_at_characters() -> None:
    text = "向量数据库重排模型混合检索" * 200
    chunks = chunk_text(text, max_tokens=50, overlap_tokens=10)
    assert_well_formed(text, chunks, 50)
    assert_gapless(text, chunks)
    assert chunks[-1].end == len(text)
    assert all(len(chunk.text) == 50 for chunk in chunks[:-1])


def test_giant_word_without_spaces_is_split_into_windows() -> None:
    text = "x" * 10_000 + " tail."
    chunks = chunk_text(text, max_tokens=20, overlap_tokens=5)
    assert_well_formed(text, chunks, 20)
    assert_gapless(text, chunks)
    assert chunks[-1].end == len(text)


@pytest.mark.parametrize(
    ("max_tokens", "overlap_tokens", "named"),
    [
        (0, 0, "max_tokens"),
        (-5, 0, "max_tokens"),
        (10, 10, "overlap_tokens"),
        (10, 11, "overlap_tokens"),
        (10, -1, "overlap_tokens"),
    ],
)
def test_invalid_arguments_raise(max_tokens: int, overlap_tokens: int, named: str) -> None:
    with pytest.raises(InvalidInputError, match=named) as raised:
        chunk_text("Some text.", max_tokens=max_tokens, overlap_tokens=overlap_tokens)
    bad_value = max_tokens if named == "max_tokens" else overlap_tokens
    assert str(bad_value) in str(raised.value)


def test_invalid_arguments_are_rejected_even_for_empty_text() -> None:
    with pytest.raises(InvalidInputError):
        chunk_text("", max_tokens=0)


def test_two_million_characters_chunk_quickly() -> None:
    paragraph = ENGLISH + CHINESE + "\n\n"
    text = (paragraph * (2_000_000 // len(paragraph) + 1))[:2_000_000]
    began = time.perf_counter()
    chunks = chunk_text(text)
    elapsed = time.perf_counter() - began
    assert elapsed < 10
    assert chunks[-1].end == len(text.rstrip())
    assert all(estimate_tokens(chunk.text) <= 200 for chunk in chunks[::97])


# --- properties ------------------------------------------------------------------------

_ALPHABET = st.sampled_from([*"abcXYZ", " ", " ", ".", "。", "\n", "向", "量", "库", "！"])


@st.composite
def budgets(draw: st.DrawFn) -> tuple[int, int]:
    max_tokens = draw(st.integers(min_value=1, max_value=30))
    return max_tokens, draw(st.integers(min_value=0, max_value=max_tokens - 1))


@settings(max_examples=300, deadline=None)
@given(text=st.text(alphabet=_ALPHABET, max_size=400), budget=budgets())
def test_chunks_of_random_text_are_exact_bounded_and_numbered(
    text: str, budget: tuple[int, int]
) -> None:
    max_tokens, overlap_tokens = budget
    chunks = chunk_text(text, max_tokens=max_tokens, overlap_tokens=overlap_tokens)
    assert_well_formed(text, chunks, max_tokens)
    assert_gapless(text, chunks)
    assert (chunks == []) == (text.strip() == "")
