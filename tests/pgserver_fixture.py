"""A real PostgreSQL server for tests, started once per pytest session and stopped at its end.

The binaries come from the ``pgserver`` wheel (PostgreSQL 16 with pgvector, a dev dependency),
else from a system install (Debian's ``postgresql``, without pgvector). PostgreSQL refuses to
run as root, so under root the server runs as ``nobody`` from a temporary directory it owns. It
listens on 127.0.0.1 (a free port) and on a unix socket, with password (SCRAM) authentication,
and dies with the test process even if that is killed.

Use it from any test module (the import is what registers the fixture there)::

    from pgserver_fixture import PostgresServer, postgres_server  # noqa: F401

    def test_something(postgres_server: PostgresServer) -> None:
        dsn = postgres_server.create_database("mine", extensions=["vector"])

Modules that import it share one server: it starts on first use and stops after the last one.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import importlib.util
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

__all__ = ["PostgresServer", "find_postgres_bin", "postgres_server", "start_postgres"]

_USER = "keel"
_START_TIMEOUT = 60.0


def find_postgres_bin() -> Path | None:
    """The directory holding ``initdb`` and ``postgres``: pgserver's wheel first, else the OS."""
    spec = importlib.util.find_spec("pgserver")  # locates the package without importing it
    if spec is not None and spec.submodule_search_locations:
        bindir = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
        if (bindir / "postgres").is_file():
            return bindir
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (candidate / "postgres").is_file():
            return candidate
    found = shutil.which("postgres")
    return Path(found).parent if found else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _demote(uid: int | None, gid: int | None) -> None:
    """In the child: drop root (PostgreSQL refuses it) and die when the parent dies."""
    if uid is not None and gid is not None:
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)
    with contextlib.suppress(OSError, AttributeError):  # prctl is Linux-only
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


@dataclass
class PostgresServer:
    """A running server: where it listens and how to log in (superuser ``keel``)."""

    bindir: Path
    base: Path
    port: int
    password: str
    process: subprocess.Popen[bytes] | None = None
    user: str = _USER
    host: str = "127.0.0.1"
    _uid: int | None = field(default=None, repr=False)
    _gid: int | None = field(default=None, repr=False)

    @property
    def socket_dir(self) -> Path:
        return self.base / "socket"

    @property
    def log_file(self) -> Path:
        return self.base / "postgres.log"

    def conninfo(self, dbname: str = "postgres", *, password: bool = True) -> str:
        """A libpq connection string over TCP (with the password unless ``password=False``)."""
        info = f"host={self.host} port={self.port} user={self.user} dbname={dbname}"
        return f"{info} password={self.password}" if password else info

    def url(self, dbname: str = "postgres") -> str:
        """The same as a ``postgresql://`` URL."""
        return f"postgresql://{self.user}:{self.password}@{self.host}:{self.port}/{dbname}"

    def psql(self, sql: str, dbname: str = "postgres") -> str:
        """Run SQL with the server's own ``psql`` client (no Python driver needed)."""
        env = {**os.environ, "PGPASSWORD": self.password, "PGCONNECT_TIMEOUT": "10"}
        done = subprocess.run(
            [
                *(str(self.bindir / "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"),
                *("-h", self.host, "-p", str(self.port), "-U", self.user, "-d", dbname, "-c", sql),
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"psql failed: {done.stderr.strip()}")
        return done.stdout.strip()

    def create_database(self, name: str, *, extensions: tuple[str, ...] | list[str] = ()) -> str:
        """Create a database (dropping one of that name first) and return its conninfo."""
        self.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.psql(f'CREATE DATABASE "{name}"')
        for ext in extensions:
            self.psql(f'CREATE EXTENSION IF NOT EXISTS "{ext}"', dbname=name)
        return self.conninfo(name)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        """Fast shutdown (SIGINT), then SIGKILL if it hangs; remove the data directory."""
        proc, self.process = self.process, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        shutil.rmtree(self.base, ignore_errors=True)


def _run_as(
    server: PostgresServer, args: list[str], **kw: object
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(  # type: ignore[call-overload, no-any-return]
        args,
        preexec_fn=lambda: _demote(server._uid, server._gid),
        env={"PATH": "/usr/bin:/bin", "LC_ALL": "C", "HOME": str(server.base)},
        capture_output=True,
        check=False,
        **kw,
    )


def start_postgres(bindir: Path | None = None) -> PostgresServer:
    """Initialise a throwaway cluster and start a server on it; raise RuntimeError if it fails."""
    bindir = bindir or find_postgres_bin()
    if bindir is None:
        raise RuntimeError("no PostgreSQL binaries (install pgserver or Debian's postgresql)")
    base = Path(tempfile.mkdtemp(prefix="keel-pg-"))
    server = PostgresServer(bindir, base, _free_port(), secrets.token_urlsafe(18))
    if os.geteuid() == 0:
        nobody = pwd.getpwnam("nobody")
        server._uid, server._gid = nobody.pw_uid, nobody.pw_gid
    try:
        server.socket_dir.mkdir()
        pwfile = base / "pwfile"
        pwfile.write_text(server.password + "\n")
        if server._uid is not None and server._gid is not None:
            for path in (base, server.socket_dir, pwfile):
                os.chown(path, server._uid, server._gid)
        pwfile.chmod(0o600)
        init = _run_as(
            server,
            [
                *(str(bindir / "initdb"), "-D", str(base / "data"), "-U", server.user),
                *("--pwfile", str(pwfile), "--auth=scram-sha-256", "-E", "UTF8", "--no-locale"),
                "--no-sync",
            ],
            timeout=120,
        )
        pwfile.unlink()
        if init.returncode != 0:
            raise RuntimeError(f"initdb failed: {init.stderr.decode(errors='replace')[-2000:]}")
        log = server.log_file.open("wb")
        if server._uid is not None and server._gid is not None:
            os.chown(server.log_file, server._uid, server._gid)
        server.process = subprocess.Popen(
            [
                *(str(bindir / "postgres"), "-D", str(base / "data"), "-p", str(server.port)),
                *("-c", f"listen_addresses={server.host}"),
                *("-c", f"unix_socket_directories={server.socket_dir}"),
                *("-c", "fsync=off", "-c", "max_connections=60", "-c", "shared_buffers=32MB"),
            ],
            preexec_fn=lambda: _demote(server._uid, server._gid),
            env={"PATH": "/usr/bin:/bin", "LC_ALL": "C", "HOME": str(base)},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        _wait_ready(server)
    except BaseException:
        server.stop()
        raise
    return server


def _wait_ready(server: PostgresServer) -> None:
    """Poll ``pg_isready`` until the server accepts connections (or has died)."""
    deadline = time.monotonic() + _START_TIMEOUT
    while time.monotonic() < deadline:
        assert server.process is not None
        if server.process.poll() is not None:
            raise RuntimeError(f"postgres exited at start:\n{server.log_tail()}")
        ready = subprocess.run(
            [str(server.bindir / "pg_isready"), "-q", "-h", server.host, "-p", str(server.port)],
            check=False,
            timeout=30,
        )
        if ready.returncode == 0:
            return
        time.sleep(0.1)
    raise RuntimeError(f"postgres did not start in {_START_TIMEOUT:.0f} s:\n{server.log_tail()}")


_shared: PostgresServer | None = None
_users = 0


def _stop_shared() -> None:
    global _shared
    if _shared is not None:
        _shared.stop()
        _shared = None


atexit.register(_stop_shared)  # a safety net if the session ends without fixture teardown


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """The session's PostgreSQL server; skips only where no PostgreSQL binaries exist."""
    global _shared, _users
    if _shared is None:
        bindir = find_postgres_bin()
        if bindir is None:
            pytest.skip("no PostgreSQL server binaries here (pip install pgserver)")
        _shared = start_postgres(bindir)
    _users += 1
    try:
        yield _shared
    finally:
        _users -= 1
        if _users == 0:
            _stop_shared()
