"""The documents for subscribers are generated from the code and checked in up to date."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema_rs
import yaml
from taskcore.messages.asyncapi import build_document, render, stale_files
from taskcore.messages.cloudevents import EXTERNAL_DATA, cloudevent_type
from taskcore.messages.topology import EXTERNAL_EVENTS_EXCHANGE

DOCS = Path(__file__).resolve().parents[3] / "docs"


def resolve(document: dict[str, Any], ref: str) -> Any:
    node: Any = document
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


def refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [node["$ref"]] if "$ref" in node else [r for v in node.values() for r in refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in refs(v)]
    return []


def test_the_checked_in_documents_are_what_the_code_generates() -> None:
    assert stale_files(DOCS) == []
    assert sorted(p.name for p in (DOCS / "schemas").glob("*.json")) == sorted(
        f"{t.short_name}.json" for t in EXTERNAL_DATA
    )


def test_the_generator_command_reports_a_stale_document(tmp_path: Path) -> None:
    for name, text in render().items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    (tmp_path / "schemas" / "progress.json").write_text("{}")
    check = [sys.executable, "-m", "taskcore.messages.asyncapi", "--check", "--docs", str(tmp_path)]
    stale = subprocess.run(check, capture_output=True, text=True, timeout=60, check=False)
    assert stale.returncode == 1
    assert "docs/schemas/progress.json" in stale.stdout
    subprocess.run([*check[:-3], "--docs", str(tmp_path)], check=True, timeout=60)
    assert subprocess.run(check, timeout=60, check=False).returncode == 0


def test_every_data_schema_is_a_valid_json_schema() -> None:
    for event_type in EXTERNAL_DATA:
        schema = json.loads((DOCS / "schemas" / f"{event_type.short_name}.json").read_text())
        assert jsonschema_rs.meta.is_valid(schema), event_type
        assert {"task_id", "status", "sequence"} <= set(schema["required"])


def test_the_asyncapi_document_describes_every_external_event_on_the_exchange() -> None:
    document = yaml.safe_load((DOCS / "asyncapi.yaml").read_text())
    assert document == build_document()
    assert document["asyncapi"].startswith("3.")
    channel = document["channels"]["taskEvents"]
    assert channel["address"] == EXTERNAL_EVENTS_EXCHANGE
    assert channel["bindings"]["amqp"]["exchange"]["type"] == "fanout"
    messages = document["components"]["messages"]
    assert {m["name"] for m in messages.values()} == {cloudevent_type(t) for t in EXTERNAL_DATA}
    for ref in refs(document):  # every reference resolves
        assert resolve(document, ref) is not None, ref
    for event_type in EXTERNAL_DATA:
        payload = resolve(document, messages[event_type.short_name]["payload"]["$ref"])
        assert payload["properties"]["type"] == {"const": cloudevent_type(event_type)}
        data = resolve(document, payload["properties"]["data"]["$ref"])
        assert data["properties"].keys() == EXTERNAL_DATA[event_type].model_fields.keys()
