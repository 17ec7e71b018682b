"""Fixtures for tests against real servers: PostgreSQL's (`pg_server`, `pg_dsn`, from
conftest_postgres.py) are registered in tests/conftest.py, for the whole suite; another kind of
server adds its own `conftest_<kind>.py` and registers it the same way."""
