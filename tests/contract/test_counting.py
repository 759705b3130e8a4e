"""``count_matching`` counts what ``count_documents`` counts, on whatever store runs."""

from __future__ import annotations

import pytest
from taskcore.adapters.mongo import Doc, Store, count_matching

QUERIES: list[Doc] = [
    {},
    {"parent_task_id": "p1"},
    {"parent_task_id": "p1", "status": "COMPLETED"},
    {"_id": {"$in": ["t0", "t3", "t9", "missing"]}},
    {"parent_task_id": "nobody"},
]


@pytest.mark.parametrize("query", QUERIES, ids=str)
async def test_count_matching_agrees_with_count_documents(store: Store, query: Doc) -> None:
    await store.tasks.insert_many(
        [
            {
                "_id": f"t{i}",
                "parent_task_id": f"p{i % 3}",
                "status": ("COMPLETED", "QUEUED")[i % 2],
            }
            for i in range(12)
        ]
    )

    assert await count_matching(store.tasks, query) == await store.tasks.count_documents(query)
