"""A real PostgreSQL server for the store tests, and the pytest fixtures that use it.

    python tests/pg_server.py start DIR   start a throwaway server in DIR, print its URL
    python tests/pg_server.py stop DIR    stop it

The fixtures take the server named by ``MODELMETER_TEST_PG`` (a postgresql://
URL of a user allowed to create databases) when set; else they start a
throwaway one here (Debian's ``postgresql`` binaries: initdb, pg_ctl) in a
temp dir, listening on 127.0.0.1 only, on a free port, with a random password.
PostgreSQL refuses to run as root, so as root it runs as the ``postgres``
user (runuser). When neither is possible the tests skip and say why. With
``MODELMETER_TEST_PG`` set, a server that cannot be used fails the tests
instead: that is how CI (.ci/run) makes sure they really ran.

Each test gets a database of its own, dropped afterwards.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ENV = "MODELMETER_TEST_PG"
SERVER_USER = "postgres"


@dataclass(frozen=True)
class Server:
    url: str  # the superuser's URL, password included
    data: Path


class NoServer(Exception):
    """Why no throwaway server can run here (the reason a test skips with)."""


def _binary(name: str) -> str:
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
                                                   reverse=True)), None)
    if found is None:
        raise NoServer(f"no PostgreSQL server binaries ({name} not found; Debian: apt-get install "
                       f"postgresql), and {ENV} is not set")
    return found


def _as_server_user(cmd: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return cmd
    try:
        pwd.getpwnam(SERVER_USER)
    except KeyError as exc:
        raise NoServer(f"running as root (PostgreSQL refuses it) and there is no {SERVER_USER!r} "
                       f"user to run the server as; set {ENV}") from exc
    runuser = shutil.which("runuser")
    if runuser is None:
        raise NoServer(f"running as root (PostgreSQL refuses it) and no runuser; set {ENV}")
    return [runuser, "-u", SERVER_USER, "--", *cmd]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(base: Path) -> Server:
    """initdb + pg_ctl start in `base` (created; owned by the server's user when root)."""
    initdb, pg_ctl = _binary("initdb"), _binary("pg_ctl")
    base.mkdir(parents=True, exist_ok=True)
    data, password = base / "data", secrets.token_hex(12)
    pwfile = base / "pw"
    pwfile.write_text(password + "\n")
    if os.geteuid() == 0:
        _as_server_user(["true"])  # the reason first, should there be no such user
        entry = pwd.getpwnam(SERVER_USER)
        for path in (base, pwfile):
            os.chown(path, entry.pw_uid, entry.pw_gid)
    run = lambda cmd: subprocess.run(_as_server_user(cmd), capture_output=True, text=True,  # noqa: E731
                                     timeout=120, check=False)
    done = run([initdb, "-D", str(data), "-U", "postgres", "--pwfile", str(pwfile), "-E", "UTF8",
                "--auth-local=trust", "--auth-host=scram-sha-256", "--no-sync"])
    pwfile.unlink()
    if done.returncode != 0:
        raise NoServer(f"initdb failed: {(done.stderr or done.stdout).strip().splitlines()[-1:]}")
    for _ in range(3):  # a port taken between choosing and binding it: choose again
        port = _free_port()
        options = (f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories={data} "
                   "-c max_connections=60")
        done = run([pg_ctl, "-D", str(data), "-l", str(base / "log"), "-w", "-t", "60",
                    "-o", options, "start"])
        if done.returncode == 0:
            return Server(f"postgresql://postgres:{password}@127.0.0.1:{port}/postgres", data)
    log = (base / "log").read_text(errors="replace").strip().splitlines()[-3:] \
        if (base / "log").exists() else []
    raise NoServer(f"pg_ctl start failed: {done.stderr.strip()} {log}")


def stop(data: Path) -> None:
    subprocess.run(_as_server_user([_binary("pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]),
                   capture_output=True, timeout=60, check=False)


def with_database(url: str, name: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parts._replace(path="/" + name))


# --- fixtures -----------------------------------------------------------------


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """The URL of a server we may create databases on; skips (with why) when there is none."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        if os.environ.get(ENV):
            pytest.fail(f"{ENV} is set but psycopg is not installed (pip install -e '.[postgres]')")
        pytest.skip("psycopg is not installed (pip install -e '.[postgres]')")
    if os.environ.get(ENV):
        yield os.environ[ENV]
        return
    base = Path(tempfile.mkdtemp(prefix="modelmeter-pg-"))
    try:
        server = start(base)
    except NoServer as exc:
        shutil.rmtree(base, ignore_errors=True)
        pytest.skip(f"no PostgreSQL server for the store tests: {exc}")
    try:
        yield server.url
    finally:
        stop(server.data)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture()
def pg_url(pg_server: str) -> Iterator[str]:
    """A fresh, empty database on the test server, dropped after the test."""
    import psycopg

    name = f"mm_test_{secrets.token_hex(6)}"
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    try:
        yield with_database(pg_server, name)
    finally:
        with psycopg.connect(pg_server, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


if __name__ == "__main__":
    action, where = sys.argv[1], Path(sys.argv[2])
    if action == "start":
        try:
            print(start(where).url)
        except NoServer as exc:
            sys.exit(f"pg_server: {exc}")
    else:
        stop(where / "data")
