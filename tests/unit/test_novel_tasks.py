"""``novel.split`` and ``novel.outline``: chapters by heading or by length, and the outline."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from taskcore.plugin import NonRetryableError
from taskcore_executor.tasktypes.chapters import (
    MAX_CHAPTER_CHARS,
    OPENING_TITLE,
    is_heading,
    split_book,
)
from taskcore_executor.tasktypes.novel import (
    Outline,
    OutlineParams,
    Split,
    SplitParams,
    outline_of,
)

from tests.unit.test_provider_llm_tasks import RecordingContext


def words(n: int, word: str = "word") -> str:
    return " ".join([word] * n)


@pytest.mark.parametrize(
    "line",
    [
        "Chapter 1",
        "CHAPTER IV.",
        "Chapter Twenty-One: The Ferry",
        "chapter xii. The Long Night",
        "Chapter 3 \u2014 Ice",
        "Prologue",
        "Epilogue: After",
        "## The Harbour",
        "   Chapter 7   ",
    ],
)
def test_chapter_headings_are_recognised(line: str) -> None:
    assert is_heading(line)


@pytest.mark.parametrize(
    "line",
    [
        "Chapter and verse were quoted at him.",
        "The chapter ended.",
        "Chapters 1 to 3",
        "#hashtag",
        "",
        "In the prologue, nobody spoke.",
    ],
)
def test_prose_is_not_a_heading(line: str) -> None:
    assert not is_heading(line)


def test_a_text_is_split_at_its_headings_and_a_short_opening_gives_the_title() -> None:
    text = (
        "THE KEEPER OF THE LAMP\n\nA story\n\n"
        "Chapter I. The Lamp\n\nIt was lit every night.\n\n"
        "Chapter II. The Storm\n\nThe wind rose.\nIt did not stop."
    )

    book = split_book(text, max_words=5000)

    assert book.split_by == "headings"
    assert book.title == "THE KEEPER OF THE LAMP"
    assert [(c.title, c.text) for c in book.chapters] == [
        ("Chapter I. The Lamp", "It was lit every night."),
        ("Chapter II. The Storm", "The wind rose.\nIt did not stop."),
    ]


def test_a_given_title_wins_and_a_long_opening_is_a_chapter_of_its_own() -> None:
    opening = words(60, "before")
    text = f"{opening}\n\n# One\n\nFirst.\n\n# Two\n\n# Three\n\nThird."

    book = split_book(text, max_words=5000, title="Given")

    assert book.title == "Given"
    assert [c.title for c in book.chapters] == [OPENING_TITLE, "One", "Three"]
    assert book.chapters[0].text == opening


def test_a_text_without_headings_is_cut_by_length_at_paragraph_breaks() -> None:
    paragraphs = [words(40, f"p{i}") for i in range(5)]

    book = split_book("\n\n".join(paragraphs), max_words=100)

    assert book.split_by == "length"
    assert book.title is None
    assert [c.title for c in book.chapters] == ["Part 1", "Part 2", "Part 3"]
    assert [c.words for c in book.chapters] == [80, 80, 40]
    assert book.chapters[1].text == f"{paragraphs[2]}\n\n{paragraphs[3]}"


def test_a_chapter_over_the_limit_is_cut_into_numbered_parts_between_words() -> None:
    book = split_book(f"Chapter 1\n\n{words(250)}", max_words=100)

    assert [c.title for c in book.chapters] == [
        "Chapter 1 (part 1 of 3)",
        "Chapter 1 (part 2 of 3)",
        "Chapter 1 (part 3 of 3)",
    ]
    assert [c.words for c in book.chapters] == [100, 100, 50]


def test_no_part_is_longer_than_the_character_bound() -> None:
    long_words = " ".join(["x" * 9_999] * 30)  # 300,000 characters in 30 words

    book = split_book(long_words, max_words=5000)

    assert all(len(c.text) <= MAX_CHAPTER_CHARS for c in book.chapters)
    assert sum(c.words for c in book.chapters) == 30


async def test_split_returns_the_chapters_and_their_titles_in_order() -> None:
    params = SplitParams(text="Chapter 1\n\nOne.\n\nChapter 2\n\nTwo.")

    result = await Split().execute(params, RecordingContext())

    assert result.titles == ["Chapter 1", "Chapter 2"]
    assert [c.model_dump() for c in result.chapters] == [
        {"title": "Chapter 1", "text": "One.", "words": 1},
        {"title": "Chapter 2", "text": "Two.", "words": 1},
    ]


async def test_a_text_with_no_words_fails_without_retrying() -> None:
    with pytest.raises(NonRetryableError, match="no words"):
        await Split().execute(SplitParams(text=" \n\n "), RecordingContext())


async def test_the_outline_pairs_each_title_with_its_summary() -> None:
    params = OutlineParams(
        title="The Keeper",
        titles=["Chapter I", "Chapter II"],
        summaries=[{"summary": "A lamp is lit. ", "provider": "offline"}, "A storm."],
    )

    result = await Outline().execute(params, RecordingContext())

    assert result.chapter_count == 2
    assert [(e.number, e.title, e.summary) for e in result.chapters] == [
        (1, "Chapter I", "A lamp is lit."),
        (2, "Chapter II", "A storm."),
    ]
    assert result.outline == (
        "# The Keeper\n\n1. **Chapter I**: A lamp is lit.\n2. **Chapter II**: A storm."
    )


def test_an_outline_needs_one_summary_per_title() -> None:
    with pytest.raises(ValidationError, match="2 titles but 1 summaries"):
        OutlineParams(titles=["a", "b"], summaries=["only one"])


def test_an_untitled_outline_is_headed_outline() -> None:
    result = outline_of(OutlineParams(titles=["Part 1"], summaries=["All of it."]))

    assert result.outline.startswith("# Outline\n")
    assert result.title is None
