"""The SQLite backend of `Store`: one file, one connection, migrated when opened.

`store.py` is the `Store` implementation; `connection.py` owns the aiosqlite connection and the
one-trip ways of using it; `messages.py` and `memory.py` hold the SQL, as plain functions run
on the connection's thread; `rows.py` maps rows to records; `migrations.py` is the schema.
"""
