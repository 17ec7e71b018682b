"""Fixtures for tests through a real PgBouncer in transaction mode: `pgbouncer` (one per
session, in front of `pg_server`) and `pgbouncer_dsn` (`pg_dsn`'s database, through PgBouncer).

Where there is no pgbouncer binary the tests skip, and the run's summary says so in one line.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.real.conftest_postgres import _SkipNote
from tests.real.pgbouncer import BIN_VARIABLE, PgBouncer, find_pgbouncer, running_pgbouncer
from tests.real.postgres import PostgresServer


@pytest.fixture(scope="session")
def pgbouncer(request: pytest.FixtureRequest, pg_server: PostgresServer) -> Iterator[PgBouncer]:
    binary = find_pgbouncer()
    if binary is None:
        reason = (
            f"SKIPPED PgBouncer tests: no pgbouncer binary (looked in {BIN_VARIABLE}, PATH and "
            "/usr/sbin; Debian: apt-get install pgbouncer)"
        )
        request.config.pluginmanager.register(_SkipNote(reason))
        pytest.skip(reason)
    with running_pgbouncer(binary, pg_server) as bouncer:
        yield bouncer


@pytest.fixture
def pgbouncer_dsn(pgbouncer: PgBouncer, pg_dsn: str) -> str:
    """`pg_dsn`'s database (new, empty, this test's own), reached through PgBouncer."""
    return pgbouncer.through(pg_dsn)
