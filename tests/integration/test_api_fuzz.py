"""Fuzz the HTTP API from its own OpenAPI schema (in-process ASGI, temporary store): no 5xx,
without a token and with one."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from oomguard.api.app import ServerSettings, create_app, serving_state

TOKEN = "fuzz-token-0123456789abcdef"


@pytest.fixture(scope="module", params=[None, TOKEN], ids=["no-token", "token"])
def api_schema(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Any, dict[str, str]]]:
    store = tmp_path_factory.mktemp("fuzz") / "fuzz.sqlite"
    token: str | None = request.param
    # A small pending limit: fuzzed counts up to 10^7 are refused, never stored.
    config = ServerSettings(
        store=str(store), workers=1, max_pending_tasks=2000, heap_profiling=False, token=token
    )
    # The header a client sends so that its requests that change state pass the guard.
    headers = {"X-Oomguard-Client": "fuzz"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    with serving_state(config) as state:
        schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(state), headers=headers)
        yield schema, headers


def operations(schema: Any) -> list[Any]:
    return [result.ok() for result in schema.get_all_operations()]


# schemathesis' pytest plugin (`from_fixture`) does not work with this pytest; drive its
# hypothesis strategies directly, one operation at a time.
@pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")
def test_no_server_errors(api_schema: tuple[Any, dict[str, str]]) -> None:
    schema, headers = api_schema
    ops = operations(schema)
    assert {op.path for op in ops} >= {"/v1/jobs", "/v1/jobs/{job_id}", "/metrics", "/healthz"}
    calls: list[int] = []
    for op in ops:

        @given(case=op.as_strategy())
        @settings(
            max_examples=25, deadline=None, database=None, suppress_health_check=list(HealthCheck)
        )
        def check(case: Any) -> None:
            response = case.call(headers=headers)
            calls.append(response.status_code)
            assert response.status_code != 401, "the token did not reach the app"
            assert response.status_code < 500, (case.method, case.path, response.text[:500])
            if response.status_code >= 400:
                assert "error" in response.json(), response.text[:200]

        check()
    assert len(calls) >= 5 * len(ops)
