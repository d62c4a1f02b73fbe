"""Shared pytest configuration: Hypothesis profiles, the PostgreSQL URL, the store fixture and the example config."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from tests.support.paths import EXAMPLE_CONFIG

# Hypothesis profiles. "ci" (the default) keeps the property and fuzz suites within their time budget
# on two cores; a failure prints the seed and a @reproduce_failure blob. HYPOTHESIS_PROFILE=thorough
# tries many more inputs.
settings.register_profile(
    "ci",
    max_examples=100,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.register_profile("thorough", parent=settings.get_profile("ci"), max_examples=2000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


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


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path):  # type: ignore[no-untyped-def]
    """A fresh, migrated Store on SQLite (a temp file) or PostgreSQL (a schema of its own)."""
    import uuid

    import sqlalchemy as sa

    from bot.store.db import Store, normalise_url

    if request.param == "sqlite":
        st = Store(f"sqlite:///{tmp_path / 'state.db'}")
        yield st
        st.dispose()
        return
    url = normalise_url(pg_url() or "")
    schema = "t_" + uuid.uuid4().hex[:12]
    admin = sa.create_engine(url)
    try:
        with admin.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    except sa.exc.OperationalError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL at FAILOVER_TEST_PG_URL is unreachable: {exc}")
        pytest.skip(f"PostgreSQL unreachable: {exc}")
    sep = "&" if "?" in url else "?"
    st = Store(f"{url}{sep}options=-csearch_path%3D{schema}")
    yield st
    st.dispose()
    with admin.begin() as conn:
        conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()
