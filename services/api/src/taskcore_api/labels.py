"""``?label=key:value`` filters (the labels themselves are validated by ``schemas.Labels``)."""

from __future__ import annotations

import re

from taskcore.listing import label_term

from taskcore_api.errors import ApiError
from taskcore_api.schemas import LABEL_KEY_PATTERN, MAX_LABEL_VALUE

_KEY = re.compile(LABEL_KEY_PATTERN)


def parse_label_filters(raw: list[str]) -> list[str]:
    """The label terms every listed task must carry, or a 422 naming ``query.label``."""
    terms: list[str] = []
    for item in raw:
        key, sep, value = item.partition(":")
        if not sep or not _KEY.match(key) or len(value) > MAX_LABEL_VALUE:
            raise ApiError(
                422,
                "validation_failed",
                "The request is not valid.",
                [
                    {
                        "field": "query.label",
                        "reason": "must be key:value, the key [a-z0-9_.-]{1,63} and the "
                        f"value at most {MAX_LABEL_VALUE} characters",
                    }
                ],
            )
        terms.append(label_term(key, value))
    return sorted(set(terms))
