"""The run store: round trips, concurrency, crash safety, schema versions, foreign files."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from modelmeter.core.errors import UserInputError
from modelmeter.store import (
    SCHEMA_VERSION,
    RunStore,
    default_store_path,
    environment_fingerprint,
)

CHILD = Path(__file__).with_name("_store_child.py")


def _report(name: str = "tiny", params: int = 10) -> dict:
    return {"schema": "modelmeter.report/1", "model": {"name": name}, "totals": {"params": params}}


def _assert_healthy(db: Path) -> list[tuple]:
    """The store opens, passes integrity_check, and every row's JSON parses."""
    with RunStore(db) as store:
        store.list_runs(limit=1)  # opens (and recovers the WAL) through our own code path
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows = conn.execute(
            "SELECT id, model, report_json, fingerprint_json, label FROM runs"
        ).fetchall()
    finally:
        conn.close()
    for _id, model, report_json, fingerprint_json, label in rows:
        report = json.loads(report_json)
        fingerprint = json.loads(fingerprint_json)
        # A whole run or nothing: every column belongs to the same save.
        assert model == report["model"]["name"]
        assert (
            label
            == f"{report['tag']}-{report['seq']}"
            == f"{fingerprint['tag']}-{fingerprint['i']}"
        )
    return rows


def test_save_get_list_round_trip(tmp_path: Path) -> None:
    with RunStore(tmp_path / "runs.sqlite") as store:
        first = store.save(_report("a", 1), fingerprint={"python": "3.11"}, label="base")
        second = store.save(_report("b", 2))
        third = store.save(_report("a", 3))
        run = store.get(first)
        assert run.report == _report("a", 1)
        assert run.fingerprint == {"python": "3.11"}
        assert run.label == "base" and run.model == "a"
        assert run.created_at.tzinfo is not None
        assert store.get(second[:6]).id == second
        assert [r.id for r in store.list_runs()] == [third, second, first]
        assert [r.id for r in store.list_runs(model="a")] == [third, first]
        assert [r.id for r in store.list_runs(limit=1)] == [third]
        assert store.list_runs(model="nope") == []


def test_get_unknown_and_ambiguous(tmp_path: Path) -> None:
    with RunStore(tmp_path / "runs.sqlite") as store:
        ids = [store.save(_report()) for _ in range(40)]
        with pytest.raises(UserInputError, match="no run"):
            store.get(next(c * 8 for c in "0123" if c * 8 not in ids))
        with pytest.raises(UserInputError, match="not a run id"):
            store.get("hello")
        # 40 ids over 16 first characters: some first character is shared.
        firsts = [i[0] for i in ids]
        shared = next(c for c in firsts if firsts.count(c) > 1)
        with pytest.raises(UserInputError, match="ambiguous"):
            store.get(shared)


def test_missing_store_reads_empty_without_creating(tmp_path: Path) -> None:
    db = tmp_path / "sub" / "runs.sqlite"
    store = RunStore(db)
    assert store.list_runs() == []
    with pytest.raises(UserInputError, match="no run"):
        store.get("abcd1234")
    assert not db.exists()
    store.save(_report())
    assert db.exists()
    store.close()


def test_default_path_follows_modelmeter_home(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("MODELMETER_HOME", str(tmp_path / "home"))
    assert default_store_path() == tmp_path / "home" / "runs.sqlite"
    with RunStore() as store:
        store.save(_report())
    assert (tmp_path / "home" / "runs.sqlite").is_file()


def test_store_is_wal_and_versioned(tmp_path: Path) -> None:
    db = tmp_path / "runs.sqlite"
    with RunStore(db) as store:
        store.save(_report())
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    conn.close()


def test_newer_schema_refused_untouched(tmp_path: Path) -> None:
    db = tmp_path / "runs.sqlite"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE runs (id TEXT PRIMARY KEY, future TEXT)")
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 7}")
    conn.commit()
    conn.close()
    before = db.read_bytes()
    for action in (lambda s: s.list_runs(), lambda s: s.save(_report())):
        with pytest.raises(UserInputError) as info:
            action(RunStore(db))
        message = str(info.value)
        assert f"newer modelmeter (schema {SCHEMA_VERSION + 7})" in message
        assert "--db" in message
    assert db.read_bytes() == before


def test_v1_store_is_migrated(tmp_path: Path) -> None:
    db = tmp_path / "runs.sqlite"
    conn = sqlite3.connect(db)
    # The v1 schema, written by hand as an old modelmeter would have.
    conn.execute(
        "CREATE TABLE runs (id TEXT PRIMARY KEY, created_at TEXT NOT NULL, report_json TEXT NOT NULL)"
    )
    conn.executemany(
        "INSERT INTO runs VALUES (?, ?, ?)",
        [
            ("0000aaaa", "2024-01-01T10:00:00.000000+00:00", json.dumps(_report("resnet", 1))),
            ("0000bbbb", "2024-01-02T10:00:00.000000+00:00", json.dumps(_report("bert", 2))),
            ("0000cccc", "2024-01-03T10:00:00.000000+00:00", "{not json"),
        ],
    )
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()

    with RunStore(db) as store:
        assert [r.id for r in store.list_runs(model="resnet")] == ["0000aaaa"]
        assert store.get("0000bb").report == _report("bert", 2)
        assert store.get("0000bb").fingerprint is None and store.get("0000bb").label is None
        new = store.save(_report("resnet", 3), label="after")
        assert [r.id for r in store.list_runs(model="resnet")] == [new, "0000aaaa"]

    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 3
    columns = {row[1] for row in conn.execute("PRAGMA table_info(runs)")}
    assert {"model", "fingerprint_json", "label", "config_hash"} <= columns
    indexes = {row[1] for row in conn.execute("PRAGMA index_list(runs)")}
    assert {"runs_model_created", "runs_created"} <= indexes
    # The row whose JSON could not be read was kept, with no model.
    assert conn.execute("SELECT model, report_json FROM runs WHERE id='0000cccc'").fetchone() == (
        None,
        "{not json",
    )
    conn.close()


def _write_v2_store(db: Path) -> None:
    """The v2 schema, written by hand exactly as modelmeter 2's migrations left it."""
    conn = sqlite3.connect(db)
    conn.execute(
        "CREATE TABLE runs (id TEXT PRIMARY KEY, created_at TEXT NOT NULL, report_json TEXT NOT NULL,"
        " model TEXT, fingerprint_json TEXT, label TEXT)"
    )
    conn.execute("CREATE INDEX runs_model_created ON runs (model, created_at)")
    conn.execute("CREATE INDEX runs_created ON runs (created_at)")
    conn.executemany(
        "INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?)",
        [
            ("0000aaaa", "2024-01-01T10:00:00.000000+00:00", json.dumps(_report("resnet", 1)),
             "resnet", json.dumps({"python": "3.10"}), "old"),
            ("0000bbbb", "2024-01-02T10:00:00.000000+00:00", json.dumps(_report("bert", 2)),
             "bert", None, None),
        ],
    )
    conn.execute("PRAGMA user_version = 2")
    conn.commit()
    conn.close()


def test_v2_store_is_migrated_to_v3(tmp_path: Path) -> None:
    db = tmp_path / "runs.sqlite"
    _write_v2_store(db)
    with RunStore(db) as store:
        old = store.get("0000aaaa")
        assert (old.report, old.fingerprint, old.label) == (_report("resnet", 1), {"python": "3.10"}, "old")
        assert old.config_hash is None and store.get("0000bbbb").config_hash is None
        assert store.find_config("abc") is None  # old rows came from no sweep
        new = store.save(_report("resnet", 3), config_hash="abc")
        assert store.find_config("abc").id == new
        assert [r.id for r in store.list_runs(model="resnet")] == [new, "0000aaaa"]
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 3
        assert "runs_config_hash" in {row[1] for row in conn.execute("PRAGMA index_list(runs)")}
        assert conn.execute("SELECT id FROM runs WHERE config_hash IS NULL ORDER BY id").fetchall() == [
            ("0000aaaa",), ("0000bbbb",)]
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        conn.close()


def test_config_hash_round_trip_and_latest_wins(tmp_path: Path) -> None:
    with RunStore(tmp_path / "runs.sqlite") as store:
        assert store.find_config("h1") is None  # no store yet: nothing, and no file made
        assert not (tmp_path / "runs.sqlite").exists()
        first = store.save(_report("a", 1), config_hash="h1")
        other = store.save(_report("b", 2), config_hash="h2")
        plain = store.save(_report("a", 9))
        assert store.find_config("h1").id == first
        second = store.save(_report("a", 3), config_hash="h1")
        found = store.find_config("h1")
        assert (found.id, found.config_hash, found.report) == (second, "h1", _report("a", 3))
        assert store.find_config("h2").id == other
        assert store.get(plain).config_hash is None
        assert store.find_config("h3") is None
        for bad in ("", None, 3):
            with pytest.raises(UserInputError):
                store.find_config(bad)  # type: ignore[arg-type]
            with pytest.raises(UserInputError):
                store.save(_report(), config_hash=bad if bad is not None else 4)  # type: ignore[arg-type]
    # Stored with the run itself, not beside it: visible to a fresh reader.
    assert RunStore(tmp_path / "runs.sqlite").find_config("h1").id == second


def test_unreadable_row_is_not_a_stored_config(tmp_path: Path) -> None:
    db = tmp_path / "runs.sqlite"
    with RunStore(db) as store:
        store.save(_report("a", 1), config_hash="h1")
    conn = sqlite3.connect(db)
    conn.execute("UPDATE runs SET report_json = '{broken' WHERE config_hash = 'h1'")
    conn.commit()
    conn.close()
    assert RunStore(db).find_config("h1") is None


@pytest.mark.parametrize(
    "content",
    [
        b"this is my thesis, not a database\n" * 50,
        b"\x00\x01\x02" * 1000,
        b"SQLite format 3\x00" + b"\xff" * 200,
    ],
    ids=["text", "binary", "corrupt-sqlite"],
)
def test_foreign_file_refused_and_untouched(tmp_path: Path, content: bytes) -> None:
    db = tmp_path / "runs.sqlite"
    db.write_bytes(content)
    for action in (lambda s: s.list_runs(), lambda s: s.save(_report()), lambda s: s.get("ab")):
        with pytest.raises(UserInputError, match="--db"):
            action(RunStore(db))
    assert db.read_bytes() == content
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs.sqlite"]


def test_other_programs_sqlite_refused(tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE customers (name TEXT)")
    conn.commit()
    conn.close()
    before = db.read_bytes()
    with pytest.raises(UserInputError, match="not a modelmeter run store"):
        RunStore(db).save(_report())
    assert db.read_bytes() == before


def test_directory_refused(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="not a file"):
        RunStore(tmp_path).list_runs()


def test_two_processes_saving_at_once_lose_nothing(tmp_path: Path) -> None:
    db = tmp_path / "runs.sqlite"
    children = [
        subprocess.Popen([sys.executable, str(CHILD), str(db), "100", tag], stderr=subprocess.PIPE)
        for tag in ("p", "q")
    ]
    for child in children:
        _, err = child.communicate(timeout=60)
        assert child.returncode == 0, err.decode()
    rows = _assert_healthy(db)
    assert len(rows) == 200
    assert len({row[0] for row in rows}) == 200
    with RunStore(db) as store:
        for tag in ("p", "q"):
            runs = store.list_runs(model=f"{tag}-model", limit=1000)
            assert sorted(r.report["seq"] for r in runs) == list(range(100))


def test_sigkill_during_save_leaves_readable_store(tmp_path: Path) -> None:
    db = tmp_path / "runs.sqlite"
    # Several kills at different moments: each must leave a healthy store and
    # the runs committed before it.
    for attempt, delay in enumerate((0.0, 0.03, 0.11)):
        child = subprocess.Popen(
            [sys.executable, str(CHILD), str(db), "loop", f"k{attempt}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            assert child.stdout is not None
            assert child.stdout.readline().strip() == b"saved", child.stderr.read().decode()
            time.sleep(delay)
        finally:
            os.kill(child.pid, signal.SIGKILL)
            child.wait(timeout=10)
        assert child.returncode == -signal.SIGKILL
        rows = _assert_healthy(db)
        assert any(row[1] == f"k{attempt}-model" for row in rows)


def test_fingerprint_keys_and_git(tmp_path: Path) -> None:
    outside = environment_fingerprint(cwd=tmp_path)
    for key in ("platform", "python", "modelmeter", "cpu", "host"):
        assert outside[key]
    assert "git" not in outside and "hardware" not in outside
    assert "torch" not in sys.modules or outside["torch"]
    json.dumps(outside)  # storable as is

    repo = tmp_path / "repo"
    repo.mkdir()
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@e",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@e",
    }

    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True)

    git("init", "-q")
    (repo / "train.py").write_text("x = 1\n")
    git("add", "train.py")
    git("commit", "-q", "-m", "first")
    clean = environment_fingerprint(hardware="h100-sxm", cwd=repo)
    assert clean["hardware"] == "h100-sxm"
    assert len(clean["git"]["commit"]) == 40 and clean["git"]["dirty"] is False
    (repo / "train.py").write_text("x = 2\n")
    assert environment_fingerprint(cwd=repo)["git"]["dirty"] is True
