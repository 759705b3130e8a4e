"""Checking a step's parameters against its task type's schema before references have values.

The strategy: every reference is replaced by ``PLACEHOLDER``, an opaque value no schema
accepts except ``Any``, the parameters are validated as usual, and every error whose
location lies on a reference's path (at the reference, inside it, or an ancestor of it)
is set aside. The rest stand: a wrong type elsewhere, an unknown key, a required field
given neither directly nor by a reference.

Why this and not the alternatives:
- Removing the references and ignoring "missing" errors at their locations only works for
  references that are object values: removing one from a list shifts the indexes after
  it (so errors land on the wrong element) and breaks length constraints.
- Substituting a value of the right type from the JSON Schema needs a second schema
  engine (unions, ``$defs``, formats, patterns, enums); a guessed value can still violate
  a constraint, and then a valid workflow would be refused.
- Errors at an ancestor are set aside too because a placeholder can make a whole object
  fail (a model validator, a union whose tag is referenced). Erring towards accepting is
  safe here: the resolved parameters are validated again when the step starts, and
  failing there fails the step with ``ValidationError`` instead of the API call.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from pydantic import BaseModel, ValidationError

from taskcore.workflows.problems import Location, Problem, problems_from_pydantic
from taskcore.workflows.references import LITERAL_KEY, is_special


class _Placeholder:
    """Stands for a value a reference will give when the step starts."""

    def __repr__(self) -> str:
        return "<value of a reference>"


PLACEHOLDER: Final = _Placeholder()


def set_aside(parameters: Any) -> tuple[Any, tuple[Location, ...]]:
    """``parameters`` with every reference replaced by ``PLACEHOLDER`` and every
    ``$literal`` by its content; and the locations of the references, in document order.

    A malformed reference is set aside like a good one: validation reports it once, as
    a reference problem, rather than again as a schema error.
    """
    found: list[Location] = []
    return _replace(parameters, (), found), tuple(found)


def on_reference_path(location: Location, references: Sequence[Location]) -> bool:
    """Whether an error at ``location`` is at, inside or an ancestor of a reference."""
    return any(_on_one_path(location, ref) for ref in references)


def parameter_problems(model: type[BaseModel], parameters: Any) -> list[Problem]:
    """The problems of ``parameters`` against ``model``, located at ``("parameters", ...)``
    (relative to the step): the building block of a ``check_step`` hook.

    A validator of the model may fail in a way pydantic does not report as a validation
    error (``AttributeError`` in a before-validator, say). With placeholders inside, that
    check is left to the step's start (no problem here); without, it is one problem that
    names only the exception's type, never its message (it may show internals).
    """
    try:
        model.model_validate(parameters)
    except ValidationError as exc:
        return problems_from_pydantic(exc, ("parameters",))
    except Exception as exc:
        if contains_placeholder(parameters):
            return []
        reason = f"the parameters could not be validated ({type(exc).__name__})"
        return [Problem(("parameters",), reason)]
    return []


def contains_placeholder(tree: Any) -> bool:
    if tree is PLACEHOLDER:
        return True
    if isinstance(tree, dict):
        return any(contains_placeholder(v) for v in tree.values())
    if isinstance(tree, list | tuple):
        return any(contains_placeholder(v) for v in tree)
    return False


def _replace(node: Any, location: Location, found: list[Location]) -> Any:
    if is_special(node):
        if LITERAL_KEY in node and len(node) == 1:
            return node[LITERAL_KEY]
        found.append(location)
        return PLACEHOLDER
    if isinstance(node, dict):
        return {k: _replace(v, (*location, k), found) for k, v in node.items()}
    if isinstance(node, list | tuple):
        return [_replace(v, (*location, i), found) for i, v in enumerate(node)]
    return node


def _on_one_path(a: Location, b: Location) -> bool:
    shorter = min(len(a), len(b))
    return a[:shorter] == b[:shorter]
