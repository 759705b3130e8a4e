"""The novel import pipeline's own steps: ``novel.split`` and ``novel.outline``.

With ``generate_summary`` between them they make the import pipeline shipped as the
workflow ``examples/novel_import.json``::

    split (novel.split) -> summarise (generate_summary, for_each chapter) -> outline (novel.outline)

``novel.split`` returns the chapters (``split.result.chapters``, each ``{title, text,
words}``) and their titles on their own (``split.result.titles``), so the outline step can
refer to the titles without the chapters' text being copied into its parameters.
``novel.outline`` pairs each title with its summary, in order. How a text is cut is
``taskcore_executor.tasktypes.chapters``.
"""

from __future__ import annotations

from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator
from taskcore.plugin import NonRetryableError, TaskContext, TaskType
from taskcore.settings import Settings

from taskcore_executor.providers.offline import count_words
from taskcore_executor.tasktypes.chapters import Book, split_book

# A split's result holds the whole text again, and results are bounded
# (TASKCORE_MAX_RESULT_BYTES, 1 MiB by default): a longer book is imported in volumes.
MAX_TEXT_CHARS = 500_000
MAX_CHAPTERS = 10_000


class SplitParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1, max_length=MAX_TEXT_CHARS, description="The whole text.")
    title: str | None = Field(
        default=None,
        max_length=200,
        description="The book's title; default: the first line of a short opening.",
    )
    max_chapter_words: int = Field(
        default=5000,
        ge=100,
        le=20_000,
        description="Longer chapters, and texts without headings, are cut into parts "
        "of at most this many words.",
    )


class ChapterText(BaseModel):
    title: str
    text: str
    words: int


class SplitResult(BaseModel):
    title: str | None
    chapters: list[ChapterText]
    titles: list[str] = Field(description="The chapters' titles, in order.")
    split_by: Literal["headings", "length"]


class Split(TaskType[SplitParams, SplitResult]):
    name = "novel.split"
    description = (
        "Split a long text into chapters at chapter headings (Chapter 12, CHAPTER IV., "
        "Prologue, # Markdown), or into parts by length when it has none."
    )
    Params = SplitParams
    Result = SplitResult

    async def execute(self, params: SplitParams, ctx: TaskContext) -> SplitResult:
        book = split_book(params.text, params.max_chapter_words, params.title)
        if not book.chapters:
            raise NonRetryableError("the text has no words to split into chapters")
        if len(book.chapters) > MAX_CHAPTERS:
            raise NonRetryableError(
                f"{len(book.chapters)} chapters, more than the {MAX_CHAPTERS} allowed: "
                "raise max_chapter_words"
            )
        return split_result(book)


def split_result(book: Book) -> SplitResult:
    chapters = [ChapterText(title=c.title, text=c.text, words=c.words) for c in book.chapters]
    return SplitResult(
        title=book.title,
        chapters=chapters,
        titles=[c.title for c in chapters],
        split_by=book.split_by,
    )


class SummaryOf(BaseModel):
    """A ``generate_summary`` result (only its ``summary`` is read)."""

    model_config = ConfigDict(extra="ignore")

    summary: str


class OutlineParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: str | None = Field(default=None, max_length=200)
    titles: list[str] = Field(min_length=1, max_length=MAX_CHAPTERS)
    summaries: list[SummaryOf | str] = Field(
        min_length=1,
        max_length=MAX_CHAPTERS,
        description="One per title, in the same order: generate_summary results or strings.",
    )

    @model_validator(mode="after")
    def _one_summary_per_title(self) -> Self:
        if len(self.titles) != len(self.summaries):
            raise ValueError(
                f"{len(self.titles)} titles but {len(self.summaries)} summaries: "
                "give one summary per chapter, in order"
            )
        return self


class OutlineEntry(BaseModel):
    number: int
    title: str
    summary: str
    words: int = Field(description="The summary's length in words.")


class OutlineResult(BaseModel):
    title: str | None
    chapter_count: int
    chapters: list[OutlineEntry]
    outline: str = Field(description="The outline as Markdown: a heading, one item per chapter.")


class Outline(TaskType[OutlineParams, OutlineResult]):
    name = "novel.outline"
    description = "Assemble a book's outline from its chapter titles and their summaries."
    Params = OutlineParams
    Result = OutlineResult

    async def execute(self, params: OutlineParams, ctx: TaskContext) -> OutlineResult:
        return outline_of(params)


def outline_of(params: OutlineParams) -> OutlineResult:
    summaries = [s if isinstance(s, str) else s.summary for s in params.summaries]
    entries = [
        OutlineEntry(number=n, title=title, summary=summary.strip(), words=count_words(summary))
        for n, (title, summary) in enumerate(zip(params.titles, summaries, strict=True), 1)
    ]
    lines = [f"# {params.title or 'Outline'}", ""]
    lines += [f"{e.number}. **{e.title}**: {e.summary}" for e in entries]
    return OutlineResult(
        title=params.title,
        chapter_count=len(entries),
        chapters=entries,
        outline="\n".join(lines),
    )


def task_types(settings: Settings | None = None) -> list[TaskType[Any, Any]]:
    """The ``taskcore.task_types`` entry point: both types, on by default."""
    return [Split(), Outline()]
