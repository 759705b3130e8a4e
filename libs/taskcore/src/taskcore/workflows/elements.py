"""The elements of a for_each step: an immutable sequence that is cheap to change one at a time.

A plain tuple would be copied whole on every element's outcome: with 10,000 elements that
is about 0.1 ms per event and a second of folding per fan-out, growing with the square of
its size (measured). Chunks of ``CHUNK`` make one change copy one chunk and the short
tuple of chunks, a few microseconds whatever the size. Hand-written because it is thirty
lines, and no persistent-vector library is among our dependencies.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")

CHUNK = 256


@dataclass(frozen=True, slots=True)
class ChunkedTuple(Generic[T]):
    """An immutable sequence; ``with_item`` returns a copy with one item replaced.

    Equal contents give equal values (the chunking depends only on the length).
    """

    chunks: tuple[tuple[T, ...], ...] = ()
    length: int = 0

    @classmethod
    def of(cls, items: Iterable[T]) -> ChunkedTuple[T]:
        flat = tuple(items)
        chunks = tuple(flat[i : i + CHUNK] for i in range(0, len(flat), CHUNK))
        return cls(chunks, len(flat))

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[T]:
        for chunk in self.chunks:
            yield from chunk

    def __getitem__(self, index: int) -> T:
        if not 0 <= index < self.length:
            raise IndexError(index)
        return self.chunks[index // CHUNK][index % CHUNK]

    def with_item(self, index: int, item: T) -> ChunkedTuple[T]:
        """A copy with ``item`` at ``index`` (which must exist)."""
        if not 0 <= index < self.length:
            raise IndexError(index)
        c, i = divmod(index, CHUNK)
        chunk = (*self.chunks[c][:i], item, *self.chunks[c][i + 1 :])
        return ChunkedTuple((*self.chunks[:c], chunk, *self.chunks[c + 1 :]), self.length)
