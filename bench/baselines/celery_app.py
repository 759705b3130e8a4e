"""The Celery application both sides of the Celery baseline use: one no-op task, acks late.

``make_app`` builds it for the submitting process. The worker subprocess is started with
``celery -A celery_app worker`` and takes ``app`` below, configured from the environment
the baseline gives it; nothing connects until the worker or a submit does.
"""

from __future__ import annotations

import os

from celery import Celery

NOOP_TASK = "bench.noop"
BROKER_ENV = "BENCH_CELERY_BROKER_URL"
BACKEND_ENV = "BENCH_CELERY_BACKEND_URL"
DATABASE_ENV = "BENCH_CELERY_BACKEND_DB"


def make_app(broker_url: str, backend_url: str | None, database: str | None = None) -> Celery:
    app = Celery("bench_baseline", broker=broker_url, backend=backend_url)
    app.conf.update(
        # The guarantee taskcore gives: a task is acked only once it has run.
        task_acks_late=True,
        task_ignore_result=backend_url is None,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        broker_connection_retry_on_startup=True,
    )
    if backend_url is not None and database is not None:
        app.conf.mongodb_backend_settings = {"database": database}

    # shared=False: each app registers its own task, so two apps in one process do not clash.
    @app.task(name=NOOP_TASK, shared=False)  # type: ignore[untyped-decorator]
    def noop() -> None:
        return None

    return app


app = make_app(
    os.environ.get(BROKER_ENV, "amqp://guest:guest@127.0.0.1:5672//"),
    os.environ.get(BACKEND_ENV) or None,
    os.environ.get(DATABASE_ENV) or None,
)
