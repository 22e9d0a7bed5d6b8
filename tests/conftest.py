"""Shared fixtures: a fresh data directory with an event store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from eventstore.store import SmsStore, open_store
from tests import backends

backends.configure()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    backends.drop_test_schemas()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SmsStore]:
    app = open_store(tmp_path)
    yield app
    app.close()
