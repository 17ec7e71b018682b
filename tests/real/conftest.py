"""Fixtures for tests against real servers, each kind from its own module."""

# PostgreSQL (conftest_postgres.py). Imported by name rather than listed in `pytest_plugins`:
# pytest refuses `pytest_plugins` in a conftest below the rootdir when it collects the whole
# suite (`pytest -q`, as CI runs), though `pytest tests/real` would accept it.
from tests.real.conftest_postgres import pg_dsn, pg_server

__all__ = ["pg_dsn", "pg_server"]
