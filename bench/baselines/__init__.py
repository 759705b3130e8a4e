"""Baselines measured on the same machine and in the same run as taskcore's benchmarks.

Each function returns a plain dict of figures (rates in msgs/s or tasks/s, latencies in
ms), ready for a table (``format_table``) or JSON. The broker baselines are coroutines;
the Celery ones block (call them with ``asyncio.to_thread`` from async code).
"""

from .celery_baseline import (
    celery_paced_latency,
    celery_with_mongo_backend,
    celery_without_backend,
    mongo_store,
)
from .raw_broker import (
    broker_version,
    confirmed_publish_rate,
    consume_rate,
    paced_latency,
    publish_consume_rate,
)
from .report import format_table, headline_rate, median_figures

__all__ = [
    "broker_version",
    "celery_paced_latency",
    "celery_with_mongo_backend",
    "celery_without_backend",
    "confirmed_publish_rate",
    "consume_rate",
    "format_table",
    "headline_rate",
    "median_figures",
    "mongo_store",
    "paced_latency",
    "publish_consume_rate",
]
