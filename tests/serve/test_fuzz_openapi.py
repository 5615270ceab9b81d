"""Fuzz the server from its own OpenAPI document: schemathesis builds requests from the schemas,
valid ones (they reach the engine: ``model`` is the served name there) and invalid ones. None may
get a server error or a response its schema does not describe, an invalid one may not be
accepted, and no request may end in ``finish_reason: "error"``; afterwards the engine is idle and
healthy.

The run is bounded for CI: a fixed number of examples per operation, no shrinking, and the
generated ``n`` and token limits capped (a valid request for 128 choices of 256 tokens is a
minute of CPU time, and says nothing more about the server).
"""

from __future__ import annotations

import httpx
import pytest
from server_process import TINY_SESSION_LEN
from test_server_robustness import wait_idle

# A dev tool: machines without it (the GPU test machine) skip the module instead of failing.
schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from schemathesis.checks import positive_data_acceptance  # noqa: E402

EXAMPLES = 25  # per operation and generation mode
CAPS = {"n": 2, "max_tokens": 8, "max_completion_tokens": 8, "request_output_len": 8}


@pytest.fixture(scope="module")
def operations(tiny_server):
    schema = schemathesis.openapi.from_url(f"{tiny_server.url}/openapi.json")
    found = [result.ok() for result in schema.get_all_operations()]
    assert {op.label for op in found} >= {"POST /v1/chat/completions", "POST /v1/completions"}
    return found


def bounded(case) -> None:
    """Cap the work a valid request asks of the engine; values stay valid."""
    if not isinstance(case.body, dict):
        return
    if case.operation.path == "/v1/chat/completions" or "prompt" in case.body:
        case.body.setdefault("max_tokens", CAPS["max_tokens"])
    for field, most in CAPS.items():
        value = case.body.get(field)
        # A value above the schema's maximum is left as it is: the case is then an invalid one
        # that must be refused, and capping it would make it valid.
        if type(value) is int and most < value <= TINY_SESSION_LEN:
            case.body[field] = most


@pytest.mark.parametrize("mode", [schemathesis.GenerationMode.POSITIVE,
                                  schemathesis.GenerationMode.NEGATIVE])  # fmt: skip
def test_fuzzed_requests_get_no_server_error(operations, mode):
    negative = mode is schemathesis.GenerationMode.NEGATIVE
    for operation in operations:
        if negative and operation.method.upper() != "POST":
            continue  # a route without parameters has no invalid request
        @given(operation.as_strategy(generation_mode=mode))
        @settings(max_examples=EXAMPLES, deadline=None, database=None,
                  phases=[Phase.explicit, Phase.generate],
                  suppress_health_check=list(HealthCheck))  # fmt: skip
        def fuzz(case):
            bounded(case)
            response = case.call(timeout=30)
            assert response.status_code < 500, (case.as_curl_command(), response.text)
            assert '"finish_reason":"error"' not in response.text.replace(" ", "")
            # A schema-valid request may still be refused: its prompt may not fit the session.
            case.validate_response(response, excluded_checks=[positive_data_acceptance])

        fuzz()


def test_the_engine_is_idle_after_the_fuzzing(tiny_server):
    metrics = wait_idle(tiny_server.url, 30)
    assert metrics["lmforge_num_requests_running"] == 0
    assert metrics["lmforge_kv_cache_blocks_used"] == 0
    assert metrics["lmforge_engine_steps_total"] > 0
    assert metrics["lmforge_engine_failed_steps_total"] == 0
    assert httpx.get(f"{tiny_server.url}/health").status_code == 200
    assert "engine step failed" not in tiny_server.output()
