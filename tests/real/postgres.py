"""A real PostgreSQL for the tests: the server named by TEST_POSTGRES_URL, or a throwaway cluster.

`throwaway_cluster()` runs initdb and `pg_ctl start` in a temporary directory: a free port on
127.0.0.1 only, a unix socket in that directory, trust auth, fsync off, small shared buffers. It
stops the server and deletes the directory on exit. initdb and postgres refuse to run as root, so
under root (as CI runs) both run as an unprivileged user (`postgres` if it exists, else `nobody`)
who owns the directory. Start is bounded by `start_timeout`; a failure raises
`PostgresStartError` with the tail of the server log.

`fresh_database()` gives a test its own empty database and drops it afterwards, whatever happens,
with WITH (FORCE) on PostgreSQL 13+ so a connection the test left open cannot keep it alive.

Nothing here imports pytest, so `python -m tests.real.bench_postgres` can use it too.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg

URL_VARIABLE = "TEST_POSTGRES_URL"
BIN_VARIABLE = "TEST_POSTGRES_BIN"
SUPERUSER = "postgres"


class PostgresStartError(RuntimeError):
    """The throwaway PostgreSQL cluster did not start."""


@dataclass(frozen=True)
class PostgresServer:
    """A running server and an admin (superuser) DSN for it."""

    dsn: str
    origin: str
    socket_dir: Path | None = None

    def dsn_for(self, database: str) -> str:
        """The admin DSN, pointed at another database on the same server."""
        return urlsplit(self.dsn)._replace(path=f"/{database}").geturl()


def url_from_environment() -> str | None:
    """TEST_POSTGRES_URL, if set; it must be a postgresql:// URL (asyncpg takes no key=value)."""
    url = os.environ.get(URL_VARIABLE, "").strip()
    if not url:
        return None
    if urlsplit(url).scheme not in ("postgres", "postgresql"):
        raise ValueError(f"{URL_VARIABLE} must be a postgresql:// URL, got {url!r}")
    return url


def find_bin_dir() -> Path | None:
    """Where initdb and pg_ctl are: TEST_POSTGRES_BIN, Debian's newest, or the PATH."""
    if pinned := os.environ.get(BIN_VARIABLE):
        if not (Path(pinned) / "initdb").is_file():
            raise ValueError(f"{BIN_VARIABLE}={pinned} has no initdb")
        return Path(pinned)
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    if on_path := shutil.which("initdb"):
        candidates.append(Path(on_path).parent)
    for bin_dir in candidates:
        if (bin_dir / "initdb").is_file() and (bin_dir / "pg_ctl").is_file():
            return bin_dir
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass(frozen=True)
class _RunAs:
    """Who runs initdb and the server: ourselves, or an unprivileged user when we are root."""

    uid: int | None = None
    gid: int | None = None
    name: str | None = None

    @classmethod
    def for_current_process(cls) -> _RunAs:
        if os.geteuid() != 0:
            return cls()
        for name in (SUPERUSER, "nobody"):
            with contextlib.suppress(KeyError):
                entry = pwd.getpwnam(name)
                return cls(entry.pw_uid, entry.pw_gid, name)
        raise PostgresStartError("running as root, and there is no 'postgres' or 'nobody' user")

    def run(
        self, args: list[str], *, cwd: Path, timeout: float
    ) -> subprocess.CompletedProcess[str]:
        # PG* variables (PGDATA, PGPORT, ...) would redirect initdb and pg_ctl.
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        if self.uid is None:
            return subprocess.run(
                args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
            )
        return subprocess.run(
            args,
            cwd=cwd,  # the user may not be able to read our working directory
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            user=self.uid,
            group=self.gid,
            extra_groups=[],
        )

    def give(self, path: Path) -> None:
        if self.uid is not None and self.gid is not None:
            os.chown(path, self.uid, self.gid)


def _utf8_locale() -> str:
    """C.UTF-8 where the system has it, so lower() and to_tsvector fold non-ASCII letters."""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        listed = subprocess.run(["locale", "-a"], capture_output=True, text=True, timeout=10)
        for name in listed.stdout.split():
            if name.lower() in ("c.utf8", "c.utf-8"):
                return name
    return "C"


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"(no server log: {exc})"
    return "\n".join(text.splitlines()[-lines:]) or "(server log is empty)"


@contextlib.contextmanager
def throwaway_cluster(bin_dir: Path, *, start_timeout: float = 60.0) -> Iterator[PostgresServer]:
    """initdb + pg_ctl start in a temp dir; stops the server and deletes the dir on exit."""
    run_as = _RunAs.for_current_process()
    root = Path(tempfile.mkdtemp(prefix="pytest-postgres-"))
    data, log = root / "data", root / "server.log"
    try:
        run_as.give(root)
        _initdb(run_as, bin_dir, root, data)
        port = _start(run_as, bin_dir, root, data, log, start_timeout)
        version = run_as.run([str(bin_dir / "postgres"), "--version"], cwd=root, timeout=30)
        user = f" as {run_as.name}" if run_as.name else ""
        yield PostgresServer(
            dsn=f"postgresql://{SUPERUSER}@127.0.0.1:{port}/postgres",
            origin=f"{version.stdout.strip()}, throwaway, 127.0.0.1:{port}{user}, in {root}",
            socket_dir=root,
        )
    finally:
        try:
            _stop(run_as, bin_dir, root, data)
        finally:
            shutil.rmtree(root)


def _initdb(run_as: _RunAs, bin_dir: Path, root: Path, data: Path) -> None:
    done = run_as.run(
        [
            str(bin_dir / "initdb"),
            f"--pgdata={data}",
            f"--username={SUPERUSER}",
            "--auth=trust",
            "--encoding=UTF8",
            f"--locale={_utf8_locale()}",
            "--no-sync",
            "--no-instructions",
        ],
        cwd=root,
        timeout=120,
    )
    if done.returncode != 0:
        raise PostgresStartError(f"initdb failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    settings = {
        "listen_addresses": _quote("127.0.0.1"),
        "unix_socket_directories": _quote(str(root)),
        "fsync": "off",
        "synchronous_commit": "off",
        "full_page_writes": "off",
        "shared_buffers": "16MB",
        "max_connections": "50",
    }
    with (data / "postgresql.conf").open("a") as conf:
        conf.write("\n# tests/real/postgres.py: a throwaway cluster for the tests\n")
        conf.writelines(f"{key} = {value}\n" for key, value in settings.items())


def _start(
    run_as: _RunAs, bin_dir: Path, root: Path, data: Path, log: Path, start_timeout: float
) -> int:
    """Starts on a free port; tries another port if someone took that one in between."""
    for _attempt in range(3):
        port = free_port()
        done = run_as.run(
            [
                str(bin_dir / "pg_ctl"),
                f"--pgdata={data}",
                f"--log={log}",
                f"--options=-p {port}",
                "--wait",
                f"--timeout={int(start_timeout)}",
                "start",
            ],
            cwd=root,
            timeout=start_timeout + 15,
        )
        if done.returncode == 0:
            return port
        server_log = _tail(log)
        if "could not bind" not in server_log and "already in use" not in server_log:
            break
    raise PostgresStartError(
        f"pg_ctl start failed ({done.returncode}): {done.stdout}{done.stderr}\n"
        f"--- server log ({log}) ---\n{server_log}"
    )


def _stop(run_as: _RunAs, bin_dir: Path, root: Path, data: Path) -> None:
    pid_file = data / "postmaster.pid"
    if not pid_file.exists():
        return
    with contextlib.suppress(subprocess.TimeoutExpired):
        done = run_as.run(
            [str(bin_dir / "pg_ctl"), f"--pgdata={data}", "--mode=fast", "--wait", "stop"],
            cwd=root,
            timeout=60,
        )
        if done.returncode == 0:
            return
    # pg_ctl could not stop it: SIGQUIT is PostgreSQL's immediate shutdown of our own postmaster.
    with contextlib.suppress(OSError, ValueError, IndexError):
        os.kill(int(pid_file.read_text().splitlines()[0]), signal.SIGQUIT)


def database_name(hint: str) -> str:
    """A unique, valid database name that still says which test made it."""
    slug = re.sub(r"[^a-z0-9]+", "_", hint.lower()).strip("_")
    return f"pytest_{secrets.token_hex(4)}_{slug}"[:63]


@contextlib.asynccontextmanager
async def fresh_database(server: PostgresServer, hint: str) -> AsyncIterator[str]:
    """CREATE DATABASE (empty, from template0); yields its DSN; drops it however the block ends."""
    name = database_name(hint)
    admin = await _connect_admin(server)
    try:
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
    finally:
        await admin.close()
    try:
        yield server.dsn_for(name)
    finally:
        admin = await _connect_admin(server)
        try:
            if admin.get_server_version().major >= 13:
                await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            else:
                await admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
                    name,
                )
                await admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        finally:
            await admin.close()


async def _connect_admin(server: PostgresServer) -> asyncpg.Connection:
    try:
        return await asyncpg.connect(server.dsn, timeout=30)
    except (OSError, asyncpg.PostgresError) as exc:
        raise ConnectionError(f"cannot reach PostgreSQL ({server.origin}): {exc}") from exc
