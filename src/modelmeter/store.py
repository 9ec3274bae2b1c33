"""Run history: saved reports in one SQLite file (layer 4).

`RunStore` keeps every saved report with the environment it ran in, so runs can
be listed (`modelmeter history`) and compared (`modelmeter diff`). Safety rules:

- Each save is one transaction in WAL mode, so a process killed mid-write never
  corrupts the file and never leaves half a run; concurrent writers queue on the
  lock (``busy_timeout``) instead of failing.
- The schema is versioned with ``PRAGMA user_version``. Older stores are
  migrated in place, inside one transaction; a store written by a newer
  modelmeter is refused untouched.
- A file that is not a modelmeter store (not SQLite, another program's
  database, corrupted) is refused with a `UserInputError` and never written:
  before the first write, ``PRAGMA quick_check`` must pass, and
  `check_writable` lets a command refuse a bad store before its work.
- Reading never writes: it opens the file read-only (``mode=ro``), so a store
  on a read-only disk or in a folder we cannot write can still be listed. A
  row that cannot be read is listed as unreadable; the others still are.

The default file is ``platformdirs.user_data_dir("modelmeter")/runs.sqlite``;
the ``MODELMETER_HOME`` environment variable replaces that directory.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import sqlite3
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .core.errors import UserInputError
from .core.files import check_writable

__all__ = [
    "SCHEMA_VERSION",
    "RunStore",
    "StoredRun",
    "default_store_path",
]

SCHEMA_VERSION = 3
STORE_FILENAME = "runs.sqlite"
# Long enough for another process's save (one small transaction) to finish,
# short enough that a stuck lock surfaces as an error rather than a hang.
BUSY_TIMEOUT_S = 30.0
_SQLITE_MAGIC = b"SQLite format 3\x00"
_ID_RE = re.compile(r"^[0-9a-f]{1,32}$")


@dataclass(frozen=True)
class StoredRun:
    """One saved report and where it came from."""

    id: str
    created_at: datetime  # timezone-aware, UTC
    model: str | None
    report: dict[str, Any]
    fingerprint: dict[str, Any] | None
    label: str | None
    # Why the stored row could not be read (bad JSON, bad date); `report` is
    # then empty. Listing shows such a run instead of failing on it.
    error: str | None = None
    # The sweep configuration this run measured (`modelmeter sweep`), so a
    # rerun can skip it; None for runs saved outside a sweep and for v2 rows.
    config_hash: str | None = None


def default_store_path() -> Path:
    """``$MODELMETER_HOME/runs.sqlite``, else the platform's user data dir."""
    home = os.environ.get("MODELMETER_HOME")
    if home:
        return Path(home).expanduser() / STORE_FILENAME
    import platformdirs  # imported here: only the default path needs it

    return Path(platformdirs.user_data_dir("modelmeter")) / STORE_FILENAME


# --- schema ---------------------------------------------------------------
# Migration N takes a store at schema N to N+1. A new store runs them all, so
# the upgrade path users hit is the one every test exercises.


def _create_v1(conn: sqlite3.Connection) -> None:
    # v1: the minimal history, a report and when it was saved.
    conn.execute(
        "CREATE TABLE runs ("
        " id TEXT PRIMARY KEY,"
        " created_at TEXT NOT NULL,"
        " report_json TEXT NOT NULL)"
    )


def _v1_to_v2(conn: sqlite3.Connection) -> None:
    # v2: model name as an indexed column (history filters on it without
    # parsing every report), the environment fingerprint and a user label.
    conn.execute("ALTER TABLE runs ADD COLUMN model TEXT")
    conn.execute("ALTER TABLE runs ADD COLUMN fingerprint_json TEXT")
    conn.execute("ALTER TABLE runs ADD COLUMN label TEXT")
    rows = conn.execute("SELECT id, report_json FROM runs").fetchall()
    for run_id, report_json in rows:
        try:
            model = _model_name(json.loads(report_json))
        except (ValueError, TypeError):
            model = None  # an unreadable old row keeps its data; it just has no model
        if model is not None:
            conn.execute("UPDATE runs SET model = ? WHERE id = ?", (model, run_id))
    conn.execute("CREATE INDEX runs_model_created ON runs (model, created_at)")
    conn.execute("CREATE INDEX runs_created ON runs (created_at)")


def _v2_to_v3(conn: sqlite3.Connection) -> None:
    # v3: the sweep configuration hash, indexed so a resuming sweep looks each
    # configuration up without a scan. Older rows came from no sweep: NULL.
    conn.execute("ALTER TABLE runs ADD COLUMN config_hash TEXT")
    conn.execute("CREATE INDEX runs_config_hash ON runs (config_hash, created_at)")


_MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {
    0: _create_v1,
    1: _v1_to_v2,
    2: _v2_to_v3,
}
assert sorted(_MIGRATIONS) == list(range(SCHEMA_VERSION))


class RunStore:
    """The run history in one SQLite file; open lazily, close with `close()` or `with`."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = Path(path).expanduser() if path is not None else default_store_path()
        self._conn: sqlite3.Connection | None = None
        self._writable = False

    # -- public API ---------------------------------------------------------

    def save(
        self,
        report: dict[str, Any],
        fingerprint: dict[str, Any] | None = None,
        label: str | None = None,
        config_hash: str | None = None,
    ) -> str:
        """Store one report (in one transaction) and return its new run id.

        `config_hash` names the sweep configuration the report measured
        (`find_config` looks it up); None outside a sweep.
        """
        report_json, fingerprint_json = encode_run(report, fingerprint, config_hash)
        created_at = datetime.now(timezone.utc).isoformat(timespec="microseconds")
        conn = self._write_connection()
        assert conn is not None
        with self._sqlite_errors():
            # IMMEDIATE takes the write lock up front, so concurrent savers wait
            # on busy_timeout here rather than failing at COMMIT.
            conn.execute("BEGIN IMMEDIATE")
            try:
                run_id = self._insert(
                    conn, created_at, _model_name(report), report_json, fingerprint_json, label,
                    config_hash,
                )
                conn.execute("COMMIT")
            except BaseException:
                _rollback(conn)
                raise
        return run_id

    def get(self, run_id: str) -> StoredRun:
        """The run whose id is `run_id` or starts with it (a unique prefix)."""
        prefix = run_id.strip().lower()
        if not _ID_RE.match(prefix):
            raise UserInputError(
                f"{run_id!r} is not a run id (run ids are hex, e.g. 3f9a01c2; "
                "`modelmeter history` lists them)"
            )
        conn = self._read_connection()
        rows: list[tuple[Any, ...]] = []
        if conn is not None:
            with self._sqlite_errors():
                rows = conn.execute(
                    f"SELECT {_COLUMNS} FROM runs WHERE id GLOB ? ORDER BY id LIMIT 6",
                    (prefix + "*",),  # hex only, so no GLOB metacharacters to escape
                ).fetchall()
        if not rows:
            raise UserInputError(
                f"no run {run_id!r} in {self.path} (`modelmeter history` lists the stored runs)"
            )
        if len(rows) > 1:
            ids = ", ".join(row[0] for row in rows[:5])
            raise UserInputError(
                f"run id prefix {run_id!r} is ambiguous ({ids}{', …' if len(rows) > 5 else ''});"
                " give more characters"
            )
        run = self._row_to_run(rows[0])
        if run.error is not None:
            raise UserInputError(f"run {run.id} in {self.path} cannot be read: {run.error}")
        return run

    def find_config(self, config_hash: str) -> StoredRun | None:
        """The latest run saved with `config_hash`, or None when there is none.

        A row whose JSON cannot be read counts as absent, so a resuming sweep
        measures that configuration again instead of trusting a broken row.
        """
        check_config_hash(config_hash, allow_none=False)
        conn = self._read_connection()
        if conn is None:
            return None
        with self._sqlite_errors():
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM runs WHERE config_hash = ?"
                " ORDER BY created_at DESC, rowid DESC",
                (config_hash,),
            ).fetchall()
        for row in rows:
            run = self._row_to_run(row)
            if run.error is None:
                return run
        return None

    def list_runs(self, model: str | None = None, limit: int = 50) -> list[StoredRun]:
        """Newest first; only runs of `model` when given. Unreadable rows come with `error` set."""
        if limit < 1:
            raise UserInputError(f"limit must be at least 1, got {limit}")
        conn = self._read_connection()
        if conn is None:
            return []  # no store yet: an empty history, and no file created for it
        where, params = ("WHERE model = ?", [model]) if model is not None else ("", [])
        with self._sqlite_errors():
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM runs {where} ORDER BY created_at DESC, rowid DESC LIMIT ?",
                (*params, limit),
            ).fetchall()
        return [self._row_to_run(row) for row in rows]

    def check_writable(self) -> None:
        """Refuse now (UserInputError) a store that `save` would refuse; creates and changes nothing.

        For commands that save at the end of a long run: the file must be a
        healthy modelmeter store of a schema we know (or absent, in a place
        where it can be created), and writable.
        """
        path = self.path
        if not path.exists():
            check_writable(path, "run store", make_folders=True)  # save() makes missing folders
            return
        if not path.is_file():
            raise UserInputError(f"{path} is not a file; use --db to pick a store file")
        _check_sqlite_header(path)
        check_writable(path, "run store")  # the file, and its folder for the WAL files
        if path.stat().st_size == 0:
            return
        conn = self._open_read_only(path)
        try:
            with self._sqlite_errors():
                self._check_schema(conn)
                self._check_integrity(conn)
        finally:
            conn.close()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self._writable = False

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals ------------------------------------------------------------

    @staticmethod
    def _insert(
        conn: sqlite3.Connection,
        created_at: str,
        model: str | None,
        report_json: str,
        fingerprint_json: str | None,
        label: str | None,
        config_hash: str | None = None,
    ) -> str:
        # 32 random bits: short enough to type, and a collision is retried.
        for _ in range(16):
            run_id = secrets.token_hex(4)
            try:
                conn.execute(
                    "INSERT INTO runs (id, created_at, model, report_json, fingerprint_json, label,"
                    " config_hash) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (run_id, created_at, model, report_json, fingerprint_json, label, config_hash),
                )
            except sqlite3.IntegrityError:
                continue
            return run_id
        raise RuntimeError("could not draw an unused run id in 16 tries")

    @staticmethod
    def _row_to_run(row: tuple[Any, ...]) -> StoredRun:
        """A run from its row; a row that cannot be decoded becomes a run with `error` set."""
        run_id, created_at, model, report_json, fingerprint_json, label, config_hash = row
        config_hash = config_hash if isinstance(config_hash, str) else None
        when = datetime.fromtimestamp(0, timezone.utc)
        try:
            when = datetime.fromisoformat(created_at)
            report = json.loads(report_json)
            fingerprint = json.loads(fingerprint_json) if fingerprint_json else None
            if not isinstance(report, dict):
                raise ValueError(f"the report is a JSON {type(report).__name__}, not an object")
        except (ValueError, TypeError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            return StoredRun(id=str(run_id), created_at=when, model=model if isinstance(model, str) else None,
                             report={}, fingerprint=None, label=None, error=first,
                             config_hash=config_hash)
        return StoredRun(
            id=run_id,
            created_at=when,
            model=model,
            report=report,
            fingerprint=fingerprint if isinstance(fingerprint, dict) else None,
            label=label,
            config_hash=config_hash,
        )

    def _open_read_only(self, path: Path) -> sqlite3.Connection:
        """A connection that cannot write (``mode=ro``).

        A store in WAL mode needs its shared-memory file even to be read; in a
        folder we cannot write that file cannot be made, so the file is then
        opened as immutable (nobody can be writing a store there anyway).
        """
        uri = f"file:{urllib.parse.quote(str(path.resolve()))}?mode=ro"
        for suffix in ("", "&immutable=1"):
            with self._sqlite_errors():
                conn = sqlite3.connect(uri + suffix, uri=True, timeout=BUSY_TIMEOUT_S,
                                       isolation_level=None)
            try:
                conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
                conn.execute("SELECT count(*) FROM sqlite_master").fetchone()  # opens the file
                return conn
            except sqlite3.OperationalError as exc:
                conn.close()
                if suffix or "unable to open" not in str(exc):
                    with self._sqlite_errors():
                        raise
            except sqlite3.DatabaseError:
                conn.close()
                with self._sqlite_errors():
                    raise
        raise AssertionError("unreachable")

    def _read_connection(self) -> sqlite3.Connection | None:
        """An open connection for reading (None when there is no store yet); never writes."""
        if self._conn is not None:
            return self._conn
        path = self.path
        if not path.exists():
            return None
        if not path.is_file():
            raise UserInputError(f"{path} is not a file; use --db to pick a store file")
        _check_sqlite_header(path)
        if path.stat().st_size == 0:
            return None  # an empty file is a new, empty store
        conn = self._open_read_only(path)
        try:
            with self._sqlite_errors():
                conn.execute("BEGIN")
                try:
                    version = self._check_schema(conn)
                finally:
                    conn.execute("COMMIT")
        except BaseException:
            conn.close()
            raise
        if version < SCHEMA_VERSION:
            # An older store: upgrading it is a write, done once, in place.
            conn.close()
            return self._write_connection()
        self._conn = conn
        return conn

    def _write_connection(self) -> sqlite3.Connection:
        """A connection that may write: a read-only one is replaced first."""
        if self._conn is not None and self._writable:
            return self._conn
        self.close()
        conn = self._connection(create=True)
        assert conn is not None
        self._writable = True
        return conn

    def _check_integrity(self, conn: sqlite3.Connection) -> None:
        # Writing into damaged pages can spread the damage to runs that are
        # still readable: check first, and leave a damaged file as it is.
        problems = [str(row[0]) for row in conn.execute("PRAGMA quick_check(3)").fetchall()]
        if problems != ["ok"]:
            raise UserInputError(
                f"{self.path} is damaged ({'; '.join(problems)}); it was left untouched; "
                "use --db to pick another file (`sqlite3 FILE .recover` can rescue its runs)"
            )

    def _connection(self, create: bool) -> sqlite3.Connection | None:
        """The open connection, opening (and creating or migrating) the file first."""
        if self._conn is not None:
            return self._conn
        path = self.path
        if path.exists():
            if not path.is_file():
                raise UserInputError(f"{path} is not a file; use --db to pick a store file")
            _check_sqlite_header(path)
        elif not create:
            return None
        else:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise UserInputError(
                    f"cannot create the run store folder {path.parent}: {exc.strerror}; "
                    "use --db or MODELMETER_HOME to pick another place"
                ) from exc
        with self._sqlite_errors():
            conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        try:
            with self._sqlite_errors():
                conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
                # Everything up to here only reads: a file we refuse stays untouched.
                # One read transaction, so the version and the tables we see come
                # from the same moment even while another process creates the store.
                conn.execute("BEGIN")
                try:
                    if self._check_schema(conn) > 0:
                        self._check_integrity(conn)
                finally:
                    conn.execute("COMMIT")
                _enable_wal(conn)
                # FULL: a committed run survives power loss too, not just a crash.
                conn.execute("PRAGMA synchronous = FULL")
                self._migrate(conn)
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        return conn

    def _check_schema(self, conn: sqlite3.Connection) -> int:
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise UserInputError(
                f"{self.path} was written by a newer modelmeter (schema {version}); "
                "upgrade modelmeter or use --db to pick another file"
            )
        tables = {
            name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
        # user_version 0 with tables, or a version without our table: someone
        # else's database, which we must not write into.
        if (version == 0 and tables) or (version > 0 and "runs" not in tables):
            raise UserInputError(
                f"{self.path} is an SQLite database but not a modelmeter run store; "
                "use --db to pick another file"
            )
        return version

    def _migrate(self, conn: sqlite3.Connection) -> None:
        if int(conn.execute("PRAGMA user_version").fetchone()[0]) == SCHEMA_VERSION:
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Read again under the write lock: another process may have migrated
            # (or created) the store while we waited for it.
            version = self._check_schema(conn)
            for step in range(version, SCHEMA_VERSION):
                _MIGRATIONS[step](conn)
            # PRAGMA takes no bound parameters; SCHEMA_VERSION is our own int.
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            _rollback(conn)
            raise

    @contextlib.contextmanager
    def _sqlite_errors(self) -> Iterator[None]:
        """sqlite3 failures become one-line UserInputErrors naming the file."""
        try:
            yield
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                raise UserInputError(
                    f"{self.path} stayed locked by another process for {BUSY_TIMEOUT_S:.0f} s; "
                    "try again, or use --db to pick another file"
                ) from exc
            cause = _no_room(exc, self.path)
            if cause is not None:
                why, fix = cause
                raise UserInputError(
                    f"cannot write run store {self.path}: {why} ({exc}); no run was written and the "
                    f"stored runs are as they were; {fix}"
                ) from exc
            raise UserInputError(f"cannot use run store {self.path}: {exc}") from exc
        except sqlite3.DatabaseError as exc:
            raise UserInputError(
                f"{self.path} is not a readable modelmeter run store ({exc}); it was left "
                "untouched; use --db to pick another file"
            ) from exc


_COLUMNS = "id, created_at, model, report_json, fingerprint_json, label, config_hash"



def check_config_hash(config_hash: object, allow_none: bool) -> None:
    """UserInputError unless `config_hash` is a non-empty string (or None, where allowed)."""
    if config_hash is None and allow_none:
        return
    if not isinstance(config_hash, str) or not config_hash:
        raise UserInputError(f"a configuration hash must be a non-empty string, not {config_hash!r}")


def encode_run(report: Any, fingerprint: dict[str, Any] | None,
               config_hash: str | None) -> tuple[str, str | None]:
    """A save's arguments checked and its JSON texts (report, fingerprint), for every backend."""
    if not isinstance(report, dict):
        raise UserInputError(f"a report must be a JSON object, not {type(report).__name__}")
    check_config_hash(config_hash, allow_none=True)
    fingerprint_json = json.dumps(fingerprint, sort_keys=True) if fingerprint is not None else None
    return json.dumps(report, sort_keys=True), fingerprint_json


def _rollback(conn: sqlite3.Connection) -> None:
    """Undo the open transaction, if sqlite has not already: on SQLITE_FULL it rolls back
    by itself, and a second ROLLBACK ('no transaction is active') would hide the cause."""
    if conn.in_transaction:
        with contextlib.suppress(sqlite3.Error):  # the first error is the one to report
            conn.execute("ROLLBACK")


DISK_FULL = ("the disk is full", "free some space, or use --db to pick a file on another disk")


def _no_room(exc: sqlite3.Error, path: Path) -> tuple[str, str] | None:
    """(why, what to do) when a write failed for want of room (disk full, file-size limit), else None.

    sqlite says SQLITE_FULL when the disk has no space left; a write past the process's
    file-size limit (RLIMIT_FSIZE, `ulimit -f`) fails with EFBIG, which it reports only as
    a 'disk I/O error' (SQLITE_IOERR), so the limit and the free space are looked at here.
    """
    code = getattr(exc, "sqlite_errorcode", None)
    if (code is not None and code & 0xFF == sqlite3.SQLITE_FULL) or "disk is full" in str(exc):
        return DISK_FULL
    if code is not None and code & 0xFF != sqlite3.SQLITE_IOERR and "disk I/O error" not in str(exc):
        return None
    try:
        import resource

        limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
        if limit != resource.RLIM_INFINITY:
            return (f"the file-size limit of {limit} bytes (ulimit -f) was hit",
                    "raise the limit (`ulimit -f unlimited`) and run again")
    except (ImportError, OSError, ValueError):  # not a Unix: no such limit
        pass
    try:
        vfs = os.statvfs(path.parent)
        if vfs.f_bavail * vfs.f_frsize < 16 * 2**20:  # less room than one more report may take
            return DISK_FULL
    except (AttributeError, OSError):
        pass
    return None


def _enable_wal(conn: sqlite3.Connection) -> None:
    """Switch the file to WAL once; retry by hand while another process holds it.

    Changing the journal mode needs the file to itself, and sqlite answers
    "locked" at once instead of calling the busy handler, so two processes
    opening a new store together would otherwise fail.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    delay = 0.001
    while True:
        try:
            if str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
                conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.05)


def _check_sqlite_header(path: Path) -> None:
    # Checked before sqlite ever opens the file, so a file that is not ours is
    # never touched (sqlite would otherwise treat some of them as writable).
    try:
        with path.open("rb") as f:
            head = f.read(len(_SQLITE_MAGIC))
    except OSError as exc:
        raise UserInputError(f"cannot read run store {path}: {exc.strerror}") from exc
    if head and head != _SQLITE_MAGIC:  # an empty file is a new, empty store
        raise UserInputError(
            f"{path} is not an SQLite file, so not a modelmeter run store; it was left "
            "untouched; use --db to pick another file"
        )


def _model_name(report: Any) -> str | None:
    model = report.get("model") if isinstance(report, dict) else None
    if isinstance(model, dict):
        name = model.get("name")
        return name if isinstance(name, str) else None
    return model if isinstance(model, str) else None
