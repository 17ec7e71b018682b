"""A real PgBouncer in transaction mode, in front of the tests' PostgreSQL.

`running_pgbouncer()` writes a pgbouncer.ini in a temporary directory (`pool_mode = transaction`,
a free port on 127.0.0.1, no unix socket, trust auth with an auth_file naming the server's user,
every database passed through to the server by name) and runs `pgbouncer` in the foreground.
PgBouncer refuses to run as root, so under root it runs as the same unprivileged user as the
throwaway cluster (tests/real/postgres.py). It is stopped (SIGTERM: immediate shutdown) and the
directory deleted on exit. `PgBouncer.through(dsn)` is a server DSN pointed at PgBouncer.

Nothing here imports pytest.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from tests.real.postgres import PostgresServer, _RunAs, _tail, free_port

BIN_VARIABLE = "TEST_PGBOUNCER_BIN"


class PgBouncerStartError(RuntimeError):
    """PgBouncer did not start."""


@dataclass(frozen=True)
class PgBouncer:
    port: int
    version: str

    def through(self, dsn: str) -> str:
        """`dsn` (a database on the tests' server) with PgBouncer as its host and port."""
        parts = urlsplit(dsn)
        auth = parts.netloc.rpartition("@")[0]
        return parts._replace(netloc=f"{auth}@127.0.0.1:{self.port}").geturl()


def find_pgbouncer() -> str | None:
    """TEST_PGBOUNCER_BIN, the PATH, or Debian's /usr/sbin/pgbouncer."""
    if pinned := os.environ.get(BIN_VARIABLE):
        if not Path(pinned).is_file():
            raise ValueError(f"{BIN_VARIABLE}={pinned} is not a file")
        return pinned
    found = shutil.which("pgbouncer")
    if found is None and Path("/usr/sbin/pgbouncer").is_file():
        found = "/usr/sbin/pgbouncer"
    return found


def _quote_auth(value: str) -> str:
    return '"' + value.replace('"', '""') + '"'


@contextlib.contextmanager
def running_pgbouncer(
    binary: str, server: PostgresServer, *, start_timeout: float = 30.0
) -> Iterator[PgBouncer]:
    run_as = _RunAs.for_current_process()
    target = urlsplit(server.dsn)
    user, password = unquote(target.username or ""), unquote(target.password or "")
    root = Path(tempfile.mkdtemp(prefix="pytest-pgbouncer-"))
    log = root / "pgbouncer.log"
    version = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30)
    proc: subprocess.Popen[bytes] | None = None
    try:
        run_as.give(root)
        (root / "users.txt").write_text(f"{_quote_auth(user)} {_quote_auth(password)}\n")
        port = free_port()
        server_password = f" password={password}" if password else ""
        (root / "pgbouncer.ini").write_text(
            "[databases]\n"
            f"* = host={target.hostname} port={target.port or 5432}{server_password}\n"
            "[pgbouncer]\n"
            "listen_addr = 127.0.0.1\n"
            f"listen_port = {port}\n"
            "unix_socket_dir =\n"
            "pool_mode = transaction\n"
            "auth_type = trust\n"
            f"auth_file = {root / 'users.txt'}\n"
            f"logfile = {log}\n"
            "max_client_conn = 200\n"
            "default_pool_size = 8\n"
            "server_idle_timeout = 10\n"
            # asyncpg sends these at connect; PgBouncer must let them through
            "ignore_startup_parameters = extra_float_digits\n"
        )
        for name in ("users.txt", "pgbouncer.ini"):
            run_as.give(root / name)
        proc = subprocess.Popen(
            [binary, str(root / "pgbouncer.ini")],
            cwd=root,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            user=run_as.uid,
            group=run_as.gid,
            extra_groups=[] if run_as.uid is not None else None,
        )
        _wait_listening(proc, port, log, start_timeout)
        yield PgBouncer(port=port, version=version.stdout.splitlines()[0].strip())
    finally:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(root)


def _wait_listening(proc: subprocess.Popen[bytes], port: int, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise PgBouncerStartError(f"pgbouncer exited with {proc.returncode}:\n{_tail(log)}")
        if _accepts(port):
            return
        time.sleep(0.05)
    raise PgBouncerStartError(f"pgbouncer did not listen on {port} in {timeout} s:\n{_tail(log)}")


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False
