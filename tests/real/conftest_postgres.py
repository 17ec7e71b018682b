"""Fixtures for tests against a real PostgreSQL: `pg_server` (one per session) and `pg_dsn`.

`pg_server` uses the server named by TEST_POSTGRES_URL if set, else starts a throwaway cluster
from the local PostgreSQL binaries (tests/real/postgres.py), else skips, and says why in the
run's summary, so a missing PostgreSQL is never silent.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from tests.real.postgres import (
    BIN_VARIABLE,
    URL_VARIABLE,
    PostgresServer,
    find_bin_dir,
    fresh_database,
    throwaway_cluster,
    url_from_environment,
)


class _SkipNote:
    """Prints why the PostgreSQL tests were skipped at the end of the run, even under -q."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        terminalreporter.write_line(self.reason, yellow=True, bold=True)


@pytest.fixture(scope="session")
def pg_server(request: pytest.FixtureRequest) -> Iterator[PostgresServer]:
    if url := url_from_environment():
        yield PostgresServer(dsn=url, origin=f"{URL_VARIABLE}={url}")
        return
    bin_dir = find_bin_dir()
    if bin_dir is None:
        reason = (
            f"SKIPPED PostgreSQL tests: {URL_VARIABLE} is not set and no initdb/pg_ctl was "
            f"found (looked in {BIN_VARIABLE}, /usr/lib/postgresql/*/bin and PATH)"
        )
        request.config.pluginmanager.register(_SkipNote(reason))
        pytest.skip(reason)
    with throwaway_cluster(bin_dir) as server:
        yield server


@pytest.fixture
async def pg_dsn(pg_server: PostgresServer, request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """A DSN for a new, empty database of this test's own; dropped afterwards, even on failure."""
    async with fresh_database(pg_server, request.node.name) as dsn:
        yield dsn
