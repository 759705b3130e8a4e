"""The OpenAPI document, and fuzzing the running API from it with schemathesis."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import APIOperation, checks
from schemathesis.generation import GenerationMode
from taskcore.settings import Settings
from taskcore.testing.processes import ServiceProcess

from tests.integration.api.support import ALICE, API_KEYS, ROOT, auth

OUR_PATHS = {
    "/v1/tasks": {"post", "get"},
    "/v1/tasks/batch": {"post"},
    "/v1/tasks/{task_id}": {"get"},
    "/v1/tasks/{task_id}/events": {"get"},
    "/v1/tasks/{task_id}/stream": {"get"},
    "/v1/tasks/{task_id}/cancel": {"post"},
    "/v1/tasks/{task_id}/stream-token": {"post"},
    "/v1/task-types": {"get"},
}


@pytest.fixture(scope="module")
def api_process(
    module_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceProcess]:
    """The API as its own process: the fuzzer's requests are synchronous."""
    env = {
        "RABBITMQ_URL": module_settings.rabbitmq_url,
        "MONGO_URL": module_settings.mongo_url or "",
        "MONGO_DB": module_settings.mongo_db,
        "TASKCORE_API_KEYS": json.dumps({k: v.model_dump() for k, v in API_KEYS.items()}),
        "TASKCORE_RELAY_AFTER_SECONDS": "600",
    }
    process = ServiceProcess("api", env, Path(tmp_path_factory.mktemp("api-fuzz"))).start()
    yield process
    process.stop()
    print(process.log_tail(80))


@pytest.fixture(scope="module")
def openapi_document(api_process: ServiceProcess) -> dict[str, Any]:
    document: dict[str, Any] = httpx.get(f"{api_process.url}/openapi.json").json()
    return document


@pytest.fixture(scope="module")
def openapi_schema(api_process: ServiceProcess) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"{api_process.url}/openapi.json")


def test_every_route_is_documented_with_its_error_shapes(openapi_document: dict[str, Any]) -> None:
    paths = openapi_document["paths"]
    for path, methods in OUR_PATHS.items():
        assert methods <= set(paths[path]), path
        for method in methods:
            operation = paths[path][method]
            assert operation["security"] == [{"bearer": []}]
            responses = operation["responses"]
            statuses = ("401",) if path == "/v1/task-types" else ("401", "422")
            for status in statuses:
                schema = responses[status]["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/ErrorResponse"}, (path, status)
                assert responses[status]["content"]["application/json"]["example"]
            # every 4xx/5xx has the one error shape
            assert "HTTPValidationError" not in json.dumps(responses), (path, method)
    schemas = openapi_document["components"]["schemas"]
    assert schemas["TaskSubmission"]["examples"]
    assert schemas["BatchRequest"]["properties"]["tasks"]["maxItems"] == 1000
    assert "429" in paths["/v1/tasks"]["post"]["responses"]
    assert "Retry-After" in paths["/v1/tasks"]["post"]["responses"]["429"]["headers"]
    assert (
        "text/event-stream"
        in paths["/v1/tasks/{task_id}/stream"]["get"]["responses"]["200"]["content"]
    )
    assert "TASKCORE_API_KEYS" in openapi_document["info"]["description"]
    referenced = set(re.findall(r"#/components/schemas/(\w+)", json.dumps(openapi_document)))
    assert referenced <= set(schemas), f"dangling: {referenced - set(schemas)}"
    assert {"BatchItem", "StreamEvent"} <= set(schemas)


CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
    checks.response_headers_conformance,
]
MODES = [GenerationMode.POSITIVE, GenerationMode.NEGATIVE]
OUR_OPERATIONS = sorted((m.upper(), p) for p, methods in OUR_PATHS.items() for m in methods)


def fuzz(operation: APIOperation, mode: GenerationMode, max_examples: int) -> None:
    """Run one operation's generated cases against the API, with every check."""

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=max_examples,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    def run(case: schemathesis.Case) -> None:
        if isinstance(case.query, dict) and isinstance(case.query.get("wait"), int | float):
            case.query["wait"] = min(case.query["wait"], 0.2)  # nothing runs tasks here
        key = ROOT if case.path.startswith("/v1/dead-letters") else ALICE
        case.call_and_validate(headers=auth(key), checks=CHECKS)

    run()


# schemathesis.pytest.from_fixture does not work with pytest 9 (it reads a removed
# attribute of the test node), so the cases are drawn from each operation's strategy.
@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.value)
@pytest.mark.parametrize(("method", "path"), OUR_OPERATIONS)
def test_fuzzing_finds_no_server_error_and_no_schema_violation(
    openapi_schema: schemathesis.BaseSchema, method: str, path: str, mode: GenerationMode
) -> None:
    fuzz(openapi_schema[path][method], mode, max_examples=40)


@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.value)
def test_fuzzing_the_other_routes_finds_no_server_error_and_no_schema_violation(
    openapi_schema: schemathesis.BaseSchema, mode: GenerationMode
) -> None:
    others = [
        result.ok()
        for result in openapi_schema.get_all_operations()
        if result.ok().path not in OUR_PATHS
    ]
    assert others, "expected the dead-letter routes"
    for operation in others:
        fuzz(operation, mode, max_examples=15)
