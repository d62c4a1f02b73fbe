"""Shared pytest configuration: the PostgreSQL URL and the example configuration path."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
EXAMPLE_CONFIG = SHARED / "spec" / "example-config.yml"
KB_FILE = SHARED / "reference" / "redstor-failover-failback-kb.txt"


@pytest.fixture
def example_config_path() -> Path:
    return EXAMPLE_CONFIG


def pg_url() -> str | None:
    """The PostgreSQL URL for store tests; under CI a missing one is a failure, not a skip."""
    url = os.environ.get("FAILOVER_TEST_PG_URL")
    if not url:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true but FAILOVER_TEST_PG_URL is not set")
        pytest.skip("FAILOVER_TEST_PG_URL not set")
    return url
