"""Fixtures of the executor tests: one real local Ray head for the whole session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.execution.ray_head import RayHead, start_ray_head


@pytest.fixture(scope="session")
def ray_head() -> Iterator[RayHead]:
    """A Ray head on loopback with token auth, started on first use, ended at the end."""
    head = start_ray_head()
    try:
        yield head
    finally:
        head.stop()
