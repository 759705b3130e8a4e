"""Validation problems: a location in the request and a reason, rendered as the contract's
field paths (``steps[2].depends_on[0]``, ``steps[1].parameters.text``)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

# A position in a JSON document: object keys (str) and list indexes (int).
Location = tuple[str | int, ...]

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def field_path(location: Location) -> str:
    """``("steps", 2, "depends_on", 0)`` -> ``steps[2].depends_on[0]``.

    A key that is not made of letters, digits, "_" and "-" is written as a quoted index
    (``parameters["a.b"]``), so every path reads back to exactly one location.
    """
    out: list[str] = []
    for part in location:
        if isinstance(part, int):
            out.append(f"[{part}]")
        elif _BARE_KEY.match(part):
            out.append(f".{part}" if out else part)
        else:
            out.append(f"[{json.dumps(part)}]")
    return "".join(out)


@dataclass(frozen=True)
class Problem:
    """One reason a workflow is not valid, at one location of the request."""

    location: Location
    reason: str

    @property
    def field(self) -> str:
        return field_path(self.location)

    def within(self, prefix: Location) -> Problem:
        """The same problem, located below ``prefix``."""
        return Problem((*prefix, *self.location), self.reason)

    def as_detail(self) -> dict[str, str]:
        """The API's error detail shape, ``{"field", "reason"}`` (the whole body: "body")."""
        return {"field": self.field or "body", "reason": self.reason}


class InvalidWorkflow(ValueError):
    """A submission with problems; the API answers 422 with ``problems`` as details."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(problems)
        first = self.problems[0] if self.problems else None
        summary = f"{first.field}: {first.reason}" if first else "invalid workflow"
        more = f" (and {len(self.problems) - 1} more)" if len(self.problems) > 1 else ""
        super().__init__(summary + more)


def problems_from_pydantic(error: ValidationError, prefix: Location = ()) -> list[Problem]:
    """Each error of a pydantic validation, located below ``prefix``. An error about a
    mapping's key (pydantic's location ends in ``"[key]"``) is located at the key."""
    problems: list[Problem] = []
    for e in error.errors(include_url=False):
        loc, reason = tuple(e["loc"]), e["msg"]
        if loc[-1:] == ("[key]",):
            loc, reason = loc[:-1], f"invalid key: {reason}"
        problems.append(Problem((*prefix, *loc), reason))
    return problems


def describe(problems: Iterable[Problem]) -> str:
    """One line listing every problem, for error messages."""
    return "; ".join(f"{p.field}: {p.reason}" if p.location else p.reason for p in problems)


def type_name(value: Any) -> str:
    """The JSON name of a value's type, for reasons a person reads."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
