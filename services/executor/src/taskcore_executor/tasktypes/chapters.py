"""Splitting a long text into chapters: pure functions, no I/O.

Rules, in this order:

1. **Headings.** A line on its own that is a chapter heading starts a chapter: ``Chapter
   12``, ``CHAPTER IV.``, ``Chapter Twenty-One: The Ferry`` (a number in digits, Roman
   numerals or English words, then optionally a subtitle), ``Prologue``, ``Epilogue``,
   ``Interlude`` (optionally with a subtitle), or a Markdown heading (``#`` to ``###``).
   The heading line, as written, is the chapter's title.
2. **Before the first heading.** A short opening (under ``PREAMBLE_WORDS`` words) is a
   title page: its first line is the book's title when none is given. A longer one is a
   chapter of its own, titled ``Opening``.
3. **No heading at all.** The text is cut at paragraph breaks (blank lines) into parts of
   at most ``max_words`` words, titled ``Part 1``, ``Part 2``...
4. **Too long.** A chapter over ``max_words`` words (or ``MAX_CHAPTER_CHARS`` characters,
   so each stays well inside ``generate_summary``'s input) is cut the same way, its parts
   titled ``<title> (part 2 of 3)``. A paragraph longer than the limit on its own is cut
   between words.

A heading with no text under it is dropped: there is nothing to summarise.

Hand-written rather than a library's: the chapter conventions above are ours to choose,
and no maintained package splits prose by them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from taskcore_executor.providers.offline import count_words

PREAMBLE_WORDS = 50
MAX_CHAPTER_CHARS = 100_000  # generate_summary takes texts of up to 200,000 characters
OPENING_TITLE = "Opening"

_NUMBER_WORDS = (
    "one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|thirteen|fourteen|"
    "fifteen|sixteen|seventeen|eighteen|nineteen|twenty|thirty|forty|fifty|sixty|seventy|"
    "eighty|ninety|hundred"
)
_NUMBER = rf"(?:\d{{1,4}}|[ivxlcdm]{{1,8}}|(?:{_NUMBER_WORDS})(?:[-\s](?:{_NUMBER_WORDS}))*)"
_SUBTITLE = r"(?:\s*[.:\-\u2013\u2014]\s*.{0,200}|\s+[^\s.].{0,200})?"
_HEADING = re.compile(
    rf"^(?:(?:chapter|chap\.)\s+{_NUMBER}\.?{_SUBTITLE}"
    rf"|(?:prologue|epilogue|interlude){_SUBTITLE}"
    r"|#{1,3}\s+\S.{0,200})$",
    re.IGNORECASE,
)
_BLANK_LINES = re.compile(r"\n\s*\n")


@dataclass(frozen=True)
class Chapter:
    title: str
    text: str

    @property
    def words(self) -> int:
        return count_words(self.text)


@dataclass(frozen=True)
class Book:
    title: str | None
    chapters: tuple[Chapter, ...]
    split_by: Literal["headings", "length"]


def is_heading(line: str) -> bool:
    return bool(_HEADING.match(line.strip()))


def split_book(text: str, max_words: int, title: str | None = None) -> Book:
    """The chapters of ``text`` by the rules above, in order (none for a blank text)."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    starts = [i for i, line in enumerate(lines) if is_heading(line)]
    if not starts:
        parts = _cut("\n".join(lines), max_words)
        chapters = [Chapter(f"Part {n}", part) for n, part in enumerate(parts, 1)]
        return Book(title, tuple(chapters), "length")
    sections: list[Chapter] = []
    opening = "\n".join(lines[: starts[0]]).strip()
    if count_words(opening) >= PREAMBLE_WORDS:
        sections.append(Chapter(OPENING_TITLE, opening))
    elif title is None and opening:
        title = opening.splitlines()[0].strip()
    for start, end in zip(starts, [*starts[1:], len(lines)], strict=True):
        heading = lines[start].strip().lstrip("#").strip()
        sections.append(Chapter(heading, "\n".join(lines[start + 1 : end]).strip()))
    chapters = [part for section in sections for part in _parts_of(section, max_words)]
    return Book(title, tuple(chapters), "headings")


def _parts_of(chapter: Chapter, max_words: int) -> list[Chapter]:
    parts = _cut(chapter.text, max_words)
    if len(parts) <= 1:
        return [Chapter(chapter.title, parts[0])] if parts else []
    count = len(parts)
    return [Chapter(f"{chapter.title} (part {n} of {count})", p) for n, p in enumerate(parts, 1)]


def _cut(text: str, max_words: int) -> list[str]:
    """``text`` in order, as pieces within the limits, cut at paragraph breaks where it
    can be and between words where a paragraph alone is too long."""
    paragraphs = [p.strip() for p in _BLANK_LINES.split(text) if p.strip()]
    pieces = [piece for p in paragraphs for piece in _within_limits(p, max_words)]
    parts: list[str] = []
    current: list[str] = []
    words = chars = 0
    for piece in pieces:
        n, size = count_words(piece), len(piece) + 2
        if current and (words + n > max_words or chars + size > MAX_CHAPTER_CHARS):
            parts.append("\n\n".join(current))
            current, words, chars = [], 0, 0
        current.append(piece)
        words, chars = words + n, chars + size
    if current:
        parts.append("\n\n".join(current))
    return parts


def _within_limits(paragraph: str, max_words: int) -> list[str]:
    if count_words(paragraph) <= max_words and len(paragraph) <= MAX_CHAPTER_CHARS:
        return [paragraph]
    pieces: list[str] = []
    current: list[str] = []
    chars = 0
    for word in paragraph.split():
        word = word[:MAX_CHAPTER_CHARS]  # a "word" that long is not prose; keep it bounded
        if current and (len(current) >= max_words or chars + len(word) + 1 > MAX_CHAPTER_CHARS):
            pieces.append(" ".join(current))
            current, chars = [], 0
        current.append(word)
        chars += len(word) + 1
    if current:
        pieces.append(" ".join(current))
    return pieces
