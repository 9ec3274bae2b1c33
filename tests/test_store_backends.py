"""Both run stores, one set of promises: SQLite (the default) and PostgreSQL (the team store).

Every test runs on both backends through `open_store`, against a real
PostgreSQL server (tests/pg_server.py: $MODELMETER_TEST_PG, else a throwaway
server started here, else a skip that says why). Old and newer schemas are
written by hand, with each backend's own client, as another modelmeter would
have left them.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pg_server import pg_server, pg_url  # noqa: F401 - fixtures (tests/ is on sys.path)

from modelmeter.core.errors import UserInputError
from modelmeter.store import SCHEMA_VERSION, RunStore
from modelmeter.store_pg import RUNS, VERSION_TABLE, PgRunStore
from modelmeter.stores import open_store

CHILD = Path(__file__).with_name("_store_child.py")


@dataclass
class Backend:
    name: str
    db: str  # what --db takes: a file path or a postgresql:// URL

    def sql(self, statements: list[tuple[str, tuple[Any, ...]]]) -> None:
        """Run statements with the backend's own client, in one transaction."""
        if self.name == "sqlite":
            conn = sqlite3.connect(self.db)
            with conn:
                for sql, params in statements:
                    conn.execute(sql.replace("%s", "?"), params)
            conn.close()
            return
        import psycopg

        with psycopg.connect(self.db) as conn:
            for sql, params in statements:
                conn.execute(sql, params)

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        if self.name == "sqlite":
            conn = sqlite3.connect(self.db)
            try:
                return conn.execute(sql.replace("%s", "?"), params).fetchall()
            finally:
                conn.close()
        import psycopg

        with psycopg.connect(self.db) as conn:
            return conn.execute(sql, params).fetchall()

    @property
    def runs(self) -> str:
        return "runs" if self.name == "sqlite" else RUNS

    def version(self) -> int:
        if self.name == "sqlite":
            return int(self.query("PRAGMA user_version")[0][0])
        return int(self.query(f"SELECT version FROM {VERSION_TABLE}")[0][0])

    def exists(self) -> bool:
        """Whether anything of a store was created."""
        if self.name == "sqlite":
            return Path(self.db).exists()
        return bool(self.query("SELECT count(*) FROM pg_tables WHERE tablename LIKE 'modelmeter%%'")[0][0])

    def write_schema(self, version: int, create: list[str]) -> None:
        """Tables as a modelmeter of schema `version` would have made them."""
        statements = [(sql, ()) for sql in create]
        if self.name == "sqlite":
            statements.append((f"PRAGMA user_version = {version}", ()))
        else:
            statements += [(f"CREATE TABLE {VERSION_TABLE} (version INTEGER NOT NULL)", ()),
                           (f"INSERT INTO {VERSION_TABLE} VALUES (%s)", (version,))]
        self.sql(statements)


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "sqlite":
        yield Backend("sqlite", str(tmp_path / "runs.sqlite"))
    else:
        yield Backend("postgresql", request.getfixturevalue("pg_url"))


def _report(name: str = "tiny", params: int = 10) -> dict:
    return {"schema": "modelmeter.report/1", "model": {"name": name}, "totals": {"params": params}}


def _children(db: str, count: str, tags: list[str], at: float | None = None) -> list[subprocess.Popen]:
    extra = [str(at)] if at is not None else []
    return [subprocess.Popen([sys.executable, str(CHILD), db, count, tag, *extra],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE) for tag in tags]


def _assert_whole_rows(backend: Backend) -> list[tuple]:
    """Every stored row is one save, whole: its JSON parses and its columns agree."""
    rows = backend.query(f"SELECT id, model, report_json, fingerprint_json, label FROM {backend.runs}")
    for _run_id, model, report_json, fingerprint_json, label in rows:
        report, fingerprint = json.loads(report_json), json.loads(fingerprint_json)
        assert model == report["model"]["name"]
        assert label == f"{report['tag']}-{report['seq']}" == f"{fingerprint['tag']}-{fingerprint['i']}"
    with open_store(backend.db) as store:
        runs = store.list_runs(limit=100_000)
        assert [run.error for run in runs if run.error] == []
        assert sorted(run.id for run in runs) == sorted(row[0] for row in rows)
        for run_id, *_ in rows[:: max(1, len(rows) // 20)]:
            assert store.get(run_id).id == run_id  # the id reads back its own row
    return rows


# --- the surface ---------------------------------------------------------------


def test_open_store_picks_the_backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MODELMETER_DB", raising=False)
    monkeypatch.setenv("MODELMETER_HOME", str(tmp_path))
    assert open_store(None).path == tmp_path / "runs.sqlite"
    assert open_store(tmp_path / "a.sqlite").path == tmp_path / "a.sqlite"
    assert isinstance(open_store(str(tmp_path / "b.db")), RunStore)
    pytest.importorskip("psycopg", reason="psycopg is not installed (pip install -e '.[postgres]')")
    for url in ("postgresql://u:hunter2@db.example:5432/mm", "postgres://u@h/mm"):
        store = open_store(url)
        assert isinstance(store, PgRunStore) and "hunter2" not in store.location
    monkeypatch.setenv("MODELMETER_DB", "postgresql://team@db.example/mm")
    assert isinstance(open_store(None), PgRunStore)
    assert isinstance(open_store(tmp_path / "c.sqlite"), RunStore)  # --db wins over the variable


def test_save_get_list_round_trip(backend: Backend) -> None:
    with open_store(backend.db) as store:
        first = store.save(_report("a", 1), fingerprint={"python": "3.11"}, label="base")
        second = store.save(_report("b", 2), config_hash="cfg-b")
        third = store.save(_report("a", 3))
        run = store.get(first)
        assert run.report == _report("a", 1) and run.fingerprint == {"python": "3.11"}
        assert run.label == "base" and run.model == "a" and run.created_at.tzinfo is not None
        assert store.get(second[:6]).id == second
        assert [r.id for r in store.list_runs()] == [third, second, first]
        assert [r.id for r in store.list_runs(model="a")] == [third, first]
        assert [r.id for r in store.list_runs(limit=1)] == [third]
        assert store.list_runs(model="nope") == []
        found = store.find_config("cfg-b")
        assert found is not None and found.id == second and found.config_hash == "cfg-b"
        assert store.find_config("cfg-none") is None
        with pytest.raises(UserInputError, match="no run"):
            store.get(next(c * 8 for c in "0123" if not any(i.startswith(c * 8) for i in
                                                              (first, second, third))))
        with pytest.raises(UserInputError, match="not a run id"):
            store.get("hello")
        with pytest.raises(UserInputError, match="JSON object"):
            store.save([1, 2])  # type: ignore[arg-type]
    assert backend.version() == SCHEMA_VERSION


def test_ambiguous_prefix(backend: Backend) -> None:
    with open_store(backend.db) as store:
        ids = [store.save(_report()) for _ in range(40)]
        firsts = [i[0] for i in ids]
        shared = next(c for c in firsts if firsts.count(c) > 1)  # 40 ids over 16 characters
        with pytest.raises(UserInputError, match="ambiguous"):
            store.get(shared)


def test_reading_creates_nothing(backend: Backend) -> None:
    with open_store(backend.db) as store:
        assert store.list_runs() == []
        assert store.find_config("x") is None
        with pytest.raises(UserInputError, match="no run"):
            store.get("abcd1234")
        store.check_writable()
    assert not backend.exists()


def test_newer_schema_refused_untouched(backend: Backend) -> None:
    newer = SCHEMA_VERSION + 7
    backend.write_schema(newer, [f"CREATE TABLE {backend.runs} (id TEXT PRIMARY KEY, future TEXT)"])
    backend.sql([(f"INSERT INTO {backend.runs} VALUES (%s, %s)", ("abc", "from the future"))])
    actions = (lambda s: s.list_runs(), lambda s: s.save(_report()), lambda s: s.check_writable(),
               lambda s: s.get("abc"), lambda s: s.find_config("h"))
    for action in actions:
        with open_store(backend.db) as store, pytest.raises(UserInputError) as info:
            action(store)
        message = str(info.value)
        assert f"newer modelmeter (schema {newer})" in message and "--db" in message
        assert "\n" not in message
    assert backend.version() == newer
    assert backend.query(f"SELECT * FROM {backend.runs}") == [("abc", "from the future")]


def _v1_tables(backend: Backend) -> list[str]:
    if backend.name == "sqlite":
        return ["CREATE TABLE runs (id TEXT PRIMARY KEY, created_at TEXT NOT NULL, report_json TEXT NOT NULL)"]
    return [f"CREATE TABLE {RUNS} (id TEXT PRIMARY KEY, seq BIGSERIAL NOT NULL,"
            " created_at TIMESTAMPTZ NOT NULL, report_json TEXT NOT NULL)"]


def test_v1_store_is_migrated(backend: Backend) -> None:
    backend.write_schema(1, _v1_tables(backend))
    insert = f"INSERT INTO {backend.runs} (id, created_at, report_json) VALUES (%s, %s, %s)"
    backend.sql([
        (insert, ("0000aaaa", "2024-01-01T10:00:00.000000+00:00", json.dumps(_report("resnet", 1)))),
        (insert, ("0000bbbb", "2024-01-02T10:00:00.000000+00:00", json.dumps(_report("bert", 2)))),
        (insert, ("0000cccc", "2024-01-03T10:00:00.000000+00:00", "{not json")),
    ])
    with open_store(backend.db) as store:
        assert store.get("0000bb").report == _report("bert", 2)
        new = store.save(_report("resnet", 3), label="after", config_hash="h1")
        assert store.get("0000bb").fingerprint is None and store.get("0000bb").label is None
        listed = {run.id: run for run in store.list_runs()}
        assert listed["0000cccc"].error is not None  # kept, listed as unreadable beside the others
        assert listed[new].config_hash == "h1" and listed["0000aaaa"].config_hash is None
        assert store.find_config("h1").id == new
    assert backend.version() == SCHEMA_VERSION
    assert backend.query(f"SELECT report_json FROM {backend.runs} WHERE id = %s", ("0000cccc",)) \
        == [("{not json",)]


def test_unreadable_row_listed_beside_the_others(backend: Backend) -> None:
    with open_store(backend.db) as store:
        good = store.save(_report("ok"))
    backend.sql([(f"UPDATE {backend.runs} SET id = %s WHERE id = %s", ("badbad00", good))])
    with open_store(backend.db) as store:
        other = store.save(_report("ok"))
    backend.sql([(f"UPDATE {backend.runs} SET report_json = %s WHERE id = %s", ("[1, 2", "badbad00"))])
    with open_store(backend.db) as store:
        runs = {run.id: run for run in store.list_runs()}
        assert runs[other].error is None and runs["badbad00"].error
        with pytest.raises(UserInputError, match="cannot be read"):
            store.get("badbad00")


def test_foreign_table_refused(backend: Backend) -> None:
    # A table of our name with no version: another program's, which we must not write into.
    backend.sql([(f"CREATE TABLE {backend.runs} (name TEXT)", ()),
                 (f"INSERT INTO {backend.runs} VALUES (%s)", ("theirs",))])
    with open_store(backend.db) as store, pytest.raises(UserInputError, match="not a modelmeter"):
        store.save(_report())
    assert backend.query(f"SELECT * FROM {backend.runs}") == [("theirs",)]


# --- many writers, killed writers --------------------------------------------------


def test_eight_processes_fifty_saves_each_lose_nothing(backend: Backend) -> None:
    tags = [f"w{n}" for n in range(8)]
    # The saves start together, after every process has imported: they really contend,
    # on a store that none of them has created yet.
    children = _children(backend.db, "50", tags, at=time.time() + 4.0)
    for child in children:
        _, err = child.communicate(timeout=180)
        assert child.returncode == 0, err.decode()
    rows = _assert_whole_rows(backend)
    assert len(rows) == 400 and len({row[0] for row in rows}) == 400
    with open_store(backend.db) as store:
        for tag in tags:
            runs = store.list_runs(model=f"{tag}-model", limit=1000)
            assert sorted(r.report["seq"] for r in runs) == list(range(50))


def test_ten_sigkills_mid_save_leave_no_corrupt_row(backend: Backend) -> None:
    saved_before = 0
    for attempt in range(10):
        (child,) = _children(backend.db, "loop", [f"k{attempt}"])
        try:
            assert child.stdout is not None
            assert child.stdout.readline().strip() == b"saved", child.stderr.read().decode()
            time.sleep(0.013 * attempt)  # kills at different points of a save
            child.send_signal(signal.SIGKILL)
            child.wait(timeout=30)
        finally:
            if child.poll() is None:
                child.kill()
        rows = _assert_whole_rows(backend)
        assert len(rows) > saved_before  # every kill came after at least one committed save
        saved_before = len(rows)
    with open_store(backend.db) as store:
        store.save(_report("after-the-kills"))  # and the store still takes writes


# --- bad servers: one line, exit 2, no password ---------------------------------------------


def _cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "modelmeter.cli.main", *args], capture_output=True,
                          text=True, timeout=300, env={**os.environ, **(env or {})}, cwd=cwd)


def _one_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    return proc.stderr


def test_unreachable_server_and_refused_login_are_one_line(pg_server: str) -> None:  # noqa: F811
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    err = _one_line(_cli("history", "--db", f"postgresql://mm:s3cr3t-pw@127.0.0.1:{port}/mm"))
    assert "cannot connect" in err and "s3cr3t-pw" not in err and "***" in err
    parts = urllib.parse.urlsplit(pg_server)
    wrong = parts._replace(netloc=f"{parts.username}:wrong-pass-42@{parts.hostname}:{parts.port}")
    err = _one_line(_cli("history", "--db", urllib.parse.urlunsplit(wrong)))
    assert "password authentication failed" in err and "wrong-pass-42" not in err


def test_postgres_url_without_psycopg_is_one_line(tmp_path: Path) -> None:
    # psycopg made unimportable in a real CLI process (None in sys.modules: ImportError).
    code = ("import sys; sys.modules['psycopg'] = None; from modelmeter.cli.main import main; "
            "sys.argv = ['modelmeter', 'history', '--db', 'postgresql://u:pw@127.0.0.1/mm']; main()")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    err = _one_line(proc)
    assert "modelmeter[postgres]" in err


# --- the CLI on real models ------------------------------------------------------------------------


def test_cli_report_save_history_diff_on_postgres(pg_url: str, tmp_path: Path) -> None:  # noqa: F811
    saved = []
    for batch in ("1", "2"):
        proc = _cli("report", "gpt2", "--no-measure", "--batch", batch, "--save", "--db", pg_url,
                    "--quiet", env={"MODELMETER_HOME": str(tmp_path)}, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        line = next(line for line in proc.stdout.splitlines() if line.startswith("saved run "))
        assert "postgresql://" in line and urllib.parse.urlsplit(pg_url).password not in line
        saved.append(line.split()[2])
    history = _cli("history", "--json", env={"MODELMETER_DB": pg_url})  # the variable, no --db
    assert history.returncode == 0, history.stderr
    runs = json.loads(history.stdout)["runs"]
    assert [run["id"] for run in runs] == saved[::-1]
    assert [run["report"]["settings"]["batch"] for run in runs] == [2, 1]
    diff = _cli("diff", saved[0], saved[1], "--db", pg_url, "--json", "--allow-settings-change",
                "--fail-on", "flops>+150%")
    assert diff.returncode == 0, diff.stderr
    doc = json.loads(diff.stdout)
    flops = next(change for change in doc["changes"] if change["metric"] == "flops")
    assert flops["b"] == pytest.approx(2 * flops["a"], rel=0.01)  # batch 2: twice the FLOPs
    assert not (tmp_path / "runs.sqlite").exists()  # nothing went to the SQLite default
