"""Fuzz the HTTP API from its own OpenAPI schema (in-process ASGI, temporary store): no 5xx."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from oomguard.api.app import ServerSettings, create_app, serving_state


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    store = tmp_path_factory.mktemp("fuzz") / "fuzz.sqlite"
    # A small pending limit: fuzzed counts up to 10^7 are refused, never stored.
    config = ServerSettings(
        store=str(store), workers=1, max_pending_tasks=2000, heap_profiling=False
    )
    with serving_state(config) as state:
        yield schemathesis.openapi.from_asgi("/openapi.json", create_app(state))


def operations(schema: Any) -> list[Any]:
    return [result.ok() for result in schema.get_all_operations()]


# schemathesis' pytest plugin (`from_fixture`) does not work with this pytest; drive its
# hypothesis strategies directly, one operation at a time.
@pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")
def test_no_server_errors(api_schema: Any) -> None:
    ops = operations(api_schema)
    assert {op.path for op in ops} >= {"/v1/jobs", "/v1/jobs/{job_id}", "/metrics", "/healthz"}
    calls: list[int] = []
    for op in ops:

        @given(case=op.as_strategy())
        @settings(
            max_examples=25, deadline=None, database=None, suppress_health_check=list(HealthCheck)
        )
        def check(case: Any) -> None:
            response = case.call()
            calls.append(response.status_code)
            assert response.status_code < 500, (case.method, case.path, response.text[:500])
            if response.status_code >= 400:
                assert "error" in response.json(), response.text[:200]

        check()
    assert len(calls) >= 5 * len(ops)
