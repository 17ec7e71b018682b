"""The PostgreSQL backend of `Store`: one database shared by any number of replicas.

Chosen by `DATABASE_URL=postgresql://...` (`storage.open_store`); the driver is asyncpg, the
`postgres` extra. `store.py` is the `Store` implementation; `connection.py` owns the asyncpg
pool and the one-round-trip ways of using it (and the rules for sharing it); `messages.py` and
`memory.py` hold the SQL, each hot-path operation one statement; `rows.py` maps rows to
records; `migrations.py` is the schema; `copy.py` is `telegram-bot migrate-db`, which copies
a SQLite database into PostgreSQL.

**Adding a migration.** Append one `async def pNNN_<what>(db: asyncpg.Connection) -> None` to
`migrations.py` with a docstring saying why, and add it to the end of `MIGRATIONS`. It runs
inside the start-up transaction that holds the migration lock, so it must not COMMIT, and
should not build big indexes CONCURRENTLY (not allowed in a transaction). Porting a SQLite
migration (`mNNN`) is exactly that: the same tables and column names, in PostgreSQL's types
(bigint ids, boolean flags, timestamptz times, date days). `migrate-db` then copies the new
columns and tables by name without further change; it refuses a SQLite database holding a
table or column that PostgreSQL lacks, so a migration that was not ported is noticed, not lost.
tests/real/test_postgres_store.py checks the schema comes up on a blank database and under
concurrent opens.

**Coordination across replicas** (per-chat order, running replies, rate windows, the inbox's
owners) lives in this same database (p007; `coordination/postgres.py`). Code like it reuses
the store's pool
(`PostgresStore.pool`, an `asyncpg.Pool`) for short statements and transactions, keeping its
rules (no session state: `pg_advisory_xact_lock`, never a session lock or SET, on pooled
connections), and `PostgresStore.database.connect_dedicated()` for LISTEN or a lock held for a
long time. Tables go in through migrations here; advisory-lock keys must differ from
`migrations.MIGRATION_LOCK`.
"""
