"""The AsyncAPI document of taskcore's external events, and the JSON Schema of each event's
``data``, generated from the code (``taskcore.messages.cloudevents``), never written by hand.

    python -m taskcore.messages.asyncapi           # (re)write docs/asyncapi.yaml, docs/schemas/
    python -m taskcore.messages.asyncapi --check   # exit 1 if the checked-in files are stale
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic.json_schema import models_json_schema

from taskcore.domain.events import EventType
from taskcore.messages.cloudevents import (
    EXTERNAL_DATA,
    SOURCE,
    STRUCTURED_CONTENT_TYPE,
    cloudevent_type,
)
from taskcore.messages.topology import EXTERNAL_EVENTS_EXCHANGE

# The version of the external contract described here (not of the internal event schemas).
CONTRACT_VERSION = "1.0.0"
JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
DOCS_DIR = Path(__file__).resolve().parents[5] / "docs"
_REF = "#/components/schemas/{model}"

_SUMMARIES = {
    EventType.SUBMITTED: "A task was accepted and queued.",
    EventType.STARTED: "An attempt started on an executor.",
    EventType.PROGRESS: "A running task reported progress (latest value wins).",
    EventType.RETRYING: "An attempt failed; another is scheduled after a delay.",
    EventType.COMPLETED: "The task completed; `result` holds its result.",
    EventType.FAILED: "A parent failed by its subtask policy.",
    EventType.CANCELLED: "The task was cancelled.",
    EventType.DEAD_LETTERED: "The task cannot succeed; it was moved to the dead-letter queue.",
    EventType.COMPLETED_WITH_ERRORS: "A parent completed, but some of its subtasks did not.",
}

_DESCRIPTION = """\
Every change of a task's state, published on the fanout exchange `tasks.events.exchange`
once the state it announces is committed: a subscriber that reads the task
(`GET /v1/tasks/{id}`) on an event sees at least that state.

Events are CloudEvents 1.0 in structured JSON mode (`application/cloudevents+json`).
`subject` is the task id; `data.sequence` orders one task's events (higher is later;
sequences have gaps). Delivery is at least once: the CloudEvent `id` is stable across
redeliveries, so deduplicate by `id`. Events of one task may arrive out of order (late
events, several aggregator replicas): order them by `data.sequence`, and treat a
terminal status as final.
"""


def data_schema(event_type: EventType) -> dict[str, Any]:
    """The standalone JSON Schema of one external event's ``data``."""
    schema = EXTERNAL_DATA[event_type].model_json_schema(mode="validation")
    return {
        "$schema": JSON_SCHEMA_DIALECT,
        "title": f"data of {cloudevent_type(event_type)}",
        **{k: v for k, v in schema.items() if k != "title"},
    }


def _event_schema(event_type: EventType) -> dict[str, Any]:
    """The CloudEvent envelope of one type, its data by reference."""
    data_model = EXTERNAL_DATA[event_type].__name__
    return {
        "type": "object",
        "required": ["specversion", "id", "source", "type", "subject", "time", "data"],
        "properties": {
            "specversion": {"const": "1.0"},
            "id": {"type": "string", "description": "Stable across redelivery: dedupe by it."},
            "source": {"const": SOURCE},
            "type": {"const": cloudevent_type(event_type)},
            "subject": {"type": "string", "description": "The task id."},
            "time": {"type": "string", "format": "date-time"},
            "datacontenttype": {"const": "application/json"},
            "traceparent": {
                "type": "string",
                "description": "W3C trace context of the task, when it is traced "
                "(the CloudEvents distributed tracing extension).",
            },
            "data": {"$ref": _REF.format(model=data_model)},
        },
    }


def build_document() -> dict[str, Any]:
    _, definitions = models_json_schema(
        [(model, "validation") for model in EXTERNAL_DATA.values()], ref_template=_REF
    )
    schemas: dict[str, Any] = dict(sorted(definitions["$defs"].items()))
    messages: dict[str, Any] = {}
    for event_type in EXTERNAL_DATA:
        name = event_type.short_name
        event_model = f"{EXTERNAL_DATA[event_type].__name__.removesuffix('Data')}Event"
        schemas[event_model] = _event_schema(event_type)
        messages[name] = {
            "name": cloudevent_type(event_type),
            "title": cloudevent_type(event_type),
            "summary": _SUMMARIES[event_type],
            "contentType": STRUCTURED_CONTENT_TYPE,
            "payload": {"$ref": _REF.format(model=event_model)},
            "bindings": {"amqp": {"messageType": cloudevent_type(event_type)}},
        }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "taskcore task events",
            "version": CONTRACT_VERSION,
            "description": _DESCRIPTION,
        },
        "defaultContentType": STRUCTURED_CONTENT_TYPE,
        "servers": {
            "rabbitmq": {
                "host": "127.0.0.1:5672",
                "protocol": "amqp",
                "protocolVersion": "0.9.1",
                "description": "The broker named by RABBITMQ_URL.",
            }
        },
        "channels": {
            "taskEvents": {
                "address": EXTERNAL_EVENTS_EXCHANGE,
                "description": "A fanout exchange: bind a queue of your own to receive.",
                "messages": {n: {"$ref": f"#/components/messages/{n}"} for n in messages},
                "bindings": {
                    "amqp": {
                        "is": "routingKey",
                        "exchange": {
                            "name": EXTERNAL_EVENTS_EXCHANGE,
                            "type": "fanout",
                            "durable": True,
                            "autoDelete": False,
                        },
                    }
                },
            }
        },
        "operations": {
            "receiveTaskEvents": {
                "action": "receive",
                "channel": {"$ref": "#/channels/taskEvents"},
                "summary": "Follow every task's state changes.",
                "messages": [{"$ref": f"#/channels/taskEvents/messages/{n}"} for n in messages],
            }
        },
        "components": {"messages": messages, "schemas": schemas},
    }


class _Dumper(yaml.SafeDumper):
    """Multi-line strings as literal blocks, so descriptions read as written."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    return dumper.represent_scalar(
        "tag:yaml.org,2002:str", value, style="|" if "\n" in value else None
    )


_Dumper.add_representer(str, _represent_str)


def render() -> dict[str, str]:
    """Every generated file's text, by its path under ``docs/``."""
    document = yaml.dump(build_document(), Dumper=_Dumper, sort_keys=False, width=100)
    files = {"asyncapi.yaml": document}
    for event_type in EXTERNAL_DATA:
        text = json.dumps(data_schema(event_type), indent=2) + "\n"
        files[f"schemas/{event_type.short_name}.json"] = text
    return files


def stale_files(docs_dir: Path) -> list[str]:
    """Generated files missing from ``docs_dir`` or different from the code's output."""
    return [
        name
        for name, text in render().items()
        if not (docs_dir / name).is_file() or (docs_dir / name).read_text() != text
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=Path, default=DOCS_DIR, help="the docs directory")
    parser.add_argument("--check", action="store_true", help="only report stale files")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_files(args.docs)
        for name in stale:
            print(f"stale: docs/{name} (run python -m taskcore.messages.asyncapi)")
        return 1 if stale else 0
    for name, text in render().items():
        path = args.docs / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
