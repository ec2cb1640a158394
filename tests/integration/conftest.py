"""Fixtures of the integration suites."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from cluster_fixtures import configured_cluster
from investo.cluster import topology as topo


@pytest.fixture
async def cluster() -> AsyncIterator[tuple[str, topo.Topology]]:
    """A configured 2 + 2 shard cluster (see tests/cluster_fixtures.py) on the test Redis; no engines."""
    async with configured_cluster() as made:
        yield made
