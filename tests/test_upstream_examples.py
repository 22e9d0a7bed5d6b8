"""The four examples of the upstream document, uploaded with the OpenSSH client. Their placeholder
numbers (1111111111, ...) have no network, so the test routes them, as an operator would."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.service import Service, running_service


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    with running_service(tmp_path_factory.mktemp("upstream") / "data") as running:
        running.add_account("upstream")
        for prefix in ("1111", "2222", "3333", "4444"):
            assert running.cli("route", "add", prefix).returncode == 0
        yield running


def put(service: Service, tmp_path: Path, name: str, body: dict[str, Any]) -> dict[str, Any]:
    local = tmp_path / name
    local.write_text(json.dumps(body, indent=4))
    result = service.openssh("upstream", f"put {local} Send_SMS/{name}\n")
    assert result.returncode == 0, result.stderr
    folder, report = service.wait_report("upstream", name)
    assert folder == "Processed", report
    return report


def test_example_one_sends_the_same_text_to_four_numbers(service: Service, tmp_path: Path) -> None:
    report = put(service, tmp_path, "example1.json", {
        "version": 7,
        "message_template": "Hello to the SMS world.",
        "contacts": [{"msisdn": "1111111111"}, {"msisdn": "2222222222"}, {"msisdn": "3333333333"}, {"msisdn": "4444444444"}],
    })
    assert (report["contacts"], report["messages_queued"], report["credits_used"]) == (4, 4, 4)


def test_example_two_with_schedule_sender_optouts_and_max_errors(service: Service, tmp_path: Path) -> None:
    # Upstream's dates are in 2017; End must not be past, so the same window is moved to tomorrow.
    start = datetime.now(UTC) + timedelta(days=1)
    report = put(service, tmp_path, "example2.json", {
        "version": 7,
        "start": start.strftime("%Y-%m-%d %H:%M"),
        "end": (start + timedelta(minutes=15)).strftime("%Y-%m-%d %H:%M"),
        "senderId": "Fixed",
        "check_optouts": True,
        "email": "someone@example.com",
        "max_errors": "1",
        "message_template": "Message sent to @@value1@@",
        "contacts": [
            {"msisdn": "1111111111", "customerId": "AccJohn237", "values": {"value1": "John"}},
            {"msisdn": "3333333333", "customerId": "TempAcc1032", "message": "Specific message for msisdn 3333333333"},
        ],
    })
    assert report["messages_queued"] == 2 and report["contact_errors"] == []


def test_example_three_per_contact_message_overrides_the_template(service: Service, tmp_path: Path) -> None:
    report = put(service, tmp_path, "example3.json", {
        "version": 7,
        "message_template": "Message sent to 1111111111, 2222222222 and 4444444444",
        "contacts": [
            {"msisdn": "1111111111"},
            {"msisdn": "2222222222"},
            {"msisdn": "3333333333", "message": "Specific message for msisdn 3333333333"},
            {"msisdn": "4444444444"},
        ],
    })
    assert report["messages_queued"] == 4


def test_example_four_values_fill_the_template(service: Service, tmp_path: Path) -> None:
    report = put(service, tmp_path, "example4.json", {
        "version": 7,
        "message_template": "Message sent to @@value1@@,  Welcome @@value2@@ @@value3@@ @@value4@@",
        "contacts": [
            {"msisdn": "1111111111", "values": {"value1": "1111111111", "value2": "Title", "value3": "1stName", "value4": "Surname"}},
            {"msisdn": "2222222222", "values": {"value1": "2222222222", "value3": "Jane", "value4": "Doe"}},
            {"msisdn": "3333333333", "message": "Specific message for msisdn 3333333333"},
        ],
    })
    assert report["messages_queued"] == 3
    history = json.loads(service.cli("events", "--file", "example4.json", "--json").stdout)
    assert [e["event"] for e in history[0]["events"]] == [
        "FileReceived", "ProcessingStarted", "FileAccepted", "FileCompleted", "NotificationSent",
    ]
