"""Fixtures of the event tests."""
from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.helpers import http_target


@pytest.fixture
def own_port() -> Iterator[int]:
    """A port of an HTTP server this test starts on 127.0.0.1: the only thing a scan submitted here
    may ever touch (submissions name it in ``options.ports``)."""
    with http_target() as port:
        yield port
