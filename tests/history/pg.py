"""A real PostgreSQL server for the tests: ``initdb`` into a temp dir, then
``postgres`` on a free port on 127.0.0.1, stopped with ``pg_ctl``.

PostgreSQL refuses to run as root, so when the tests run as root (CI does)
the server runs as the ``postgres`` user of Debian's package (or ``nobody``),
through ``setpriv``. Host connections need a password (scram-sha-256), so a
wrong password is refused as it would be in production.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg

__all__ = ["PASSWORD", "USER", "PostgresServer", "pg_bin"]

USER = "candlewire"
PASSWORD = "s3cret-pw"
START_WITHIN = 30.0


def pg_bin(name: str) -> str:
    """A PostgreSQL server binary (Debian keeps them out of PATH)."""
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if found:
        return found[-1]
    on_path = shutil.which(name)
    if on_path is None:
        raise RuntimeError(f"PostgreSQL's {name} is not installed (apt-get install postgresql)")
    return on_path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _run_as() -> tuple[list[str], int, int]:
    """The command prefix running a program as a non-root user, with its ids."""
    if os.geteuid() != 0:
        return [], os.getuid(), os.getgid()
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            entry = pwd.getpwnam(name)
            return (
                [
                    "setpriv",
                    f"--reuid={entry.pw_uid}",
                    f"--regid={entry.pw_gid}",
                    "--clear-groups",
                    "--",
                ],
                entry.pw_uid,
                entry.pw_gid,
            )
    raise RuntimeError("no unprivileged user to run PostgreSQL as")


class PostgresServer:
    """A throwaway cluster; :meth:`start` / :meth:`stop` may be called again."""

    def __init__(self, *, durable: bool = False) -> None:
        """``durable``: fsync and synchronous commits as in production (benchmarks);
        the tests turn them off."""
        self.durable = durable
        self._tmp = tempfile.mkdtemp(prefix="cw-pg-")
        self.directory = Path(self._tmp)
        self.data = self.directory / "data"
        self.port = _free_port()
        self._prefix, uid, gid = _run_as()
        os.chown(self.directory, uid, gid)
        os.chmod(self.directory, 0o700)
        pwfile = self.directory / "pw"
        pwfile.write_text(PASSWORD + "\n")
        os.chown(pwfile, uid, gid)
        subprocess.run(
            [*self._prefix, pg_bin("initdb"), "-D", str(self.data), "-U", USER,
             f"--pwfile={pwfile}", "--auth-host=scram-sha-256", "--auth-local=trust",
             "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"],
            check=True, capture_output=True, cwd=self.directory,
        )  # fmt: skip
        pwfile.unlink()
        self.running = False

    @property
    def url(self) -> str:
        return f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{self.port}/postgres"

    def url_for(self, database: str) -> str:
        return f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        assert not self.running
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories={self._tmp} "
            "-c max_connections=200 -c shared_buffers=128MB"
        )
        if not self.durable:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        subprocess.run(
            [*self._prefix, pg_bin("pg_ctl"), "-D", str(self.data), "-l",
             str(self.directory / "log"), "-o", options, "-w", "-t", str(int(START_WITHIN)),
             "start"],
            check=True, capture_output=True, cwd=self.directory,
        )  # fmt: skip
        self.running = True
        deadline = time.monotonic() + START_WITHIN
        while True:
            try:
                psycopg.connect(self.url, connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    @property
    def pid(self) -> int:
        """The postmaster's process id (its backends are its children)."""
        return int((self.data / "postmaster.pid").read_text().split()[0])

    def stop(self, mode: str = "fast") -> None:
        if not self.running:
            return
        self.running = False
        subprocess.run(
            [*self._prefix, pg_bin("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"],
            check=False, capture_output=True, cwd=self.directory,
        )  # fmt: skip

    def create_database(self, name: str) -> str:
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url_for(name)

    def close(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self._tmp, ignore_errors=True)


@contextlib.contextmanager
def postgres(*, durable: bool = False) -> Iterator[PostgresServer]:
    server = PostgresServer(durable=durable)
    try:
        server.start()
        yield server
    finally:
        server.close()
