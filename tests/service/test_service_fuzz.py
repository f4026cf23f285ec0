"""The OpenAPI schema fuzzed with schemathesis against the running server: never a 5xx.

Every operation of ``/api/openapi.json`` gets generated requests, valid ones and invalid ones
(wrong types, out-of-range numbers, odd strings), bounded in examples per operation and in
total time; each answer must be a status under 500 that the schema declares, with the
declared content type and a body matching the declared schema.
"""

from __future__ import annotations

import time

import schemathesis
from _service_helpers import Served
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

EXAMPLES = 15  # per operation and generation mode
BUDGET_S = 45.0  # the whole fuzz run stops here (each operation still gets its first examples)
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def test_fuzzed_requests_never_answer_5xx(served: Served) -> None:
    schema = schemathesis.openapi.from_url(f"{served.url}api/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 8, [op.label for op in operations]
    begin = time.monotonic()
    calls: dict[str, int] = {}
    for op in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            if time.monotonic() - begin > BUDGET_S:
                break

            @settings(
                max_examples=EXAMPLES,
                deadline=None,
                derandomize=True,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            @given(case=op.as_strategy(generation_mode=mode))
            def run(case: schemathesis.Case) -> None:
                case.call_and_validate(checks=CHECKS, timeout=30)
                label = case.operation.label
                calls[label] = calls.get(label, 0) + 1

            run()
    assert set(calls) == {op.label for op in operations}, calls
    assert sum(calls.values()) >= 5 * len(operations)
