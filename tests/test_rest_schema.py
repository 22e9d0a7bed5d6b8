"""Schemathesis against the served /openapi.json (issue 11 §3): generated requests to every
operation of a real `sftpsms serve --http-port 0`, authenticated with a rest key, must never get a
5xx, and every answer must match the document (status codes, content types, bodies, headers)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (  # the document's promises, checked on every answer
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.service import Service, running_service

EXAMPLES = 15  # per operation
CHECKS = [
    not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
    response_headers_conformance, ignored_auth, negative_data_rejection,
]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Service, tuple[str, str]]]:
    data: Path = tmp_path_factory.mktemp("schema") / "data"
    with running_service(data, "--http-port", "0") as service:
        service.add_account("fuzz", credits=1000)
        made = service.cli("apikey", "create", "fuzz", "--channel", "rest", "--json")
        assert made.returncode == 0, made.stderr
        key = json.loads(made.stdout)
        yield service, (key["key_id"], key["secret"])


def test_every_operation_answers_as_its_document_says(served: tuple[Service, tuple[str, str]]) -> None:
    """Each operation gets its own hypothesis run (schemathesis' pytest plugin does not load under
    this pytest): generated and negative data, with and without the key."""
    service, key = served
    schema = schemathesis.openapi.from_url(f"http://127.0.0.1:{service.http_port}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 20
    failures: list[str] = []
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None,
                  derandomize=True)  # the same examples every run: CI is repeatable
        def run(case: Any) -> None:
            case.call_and_validate(auth=key, checks=CHECKS, timeout=30)

        try:
            run()
        except Exception as failure:  # noqa: BLE001  (every operation is tried; all failures are shown)
            failures.append(f"{operation.label}: {failure}"[:3000])
    assert service.service_alive()
    assert not failures, "\n\n".join(failures)
