"""Run history on a PostgreSQL server: the team store (layer 4).

`PgRunStore` has `RunStore`'s public surface (`save`, `get`, `list_runs`,
`check_writable`, `close`, `with`) over psycopg 3 (the ``[postgres]`` extra),
and keeps the same promises:

- Each save is one transaction: a writer killed mid-save leaves no row at all
  (the server rolls back its open transaction when the connection drops), and
  many writers lose none (a run id drawn twice is retried, and so is a
  serialization failure or deadlock the server asks us to retry).
- The schema carries `store.SCHEMA_VERSION` in the table ``modelmeter_schema``.
  Migrations run in one transaction under an advisory lock, so two machines
  creating the store together create it once; a store written by a newer
  modelmeter is refused untouched.
- JSON is kept as text, exactly as saved (jsonb would reorder keys and refuse
  the NaN a report may hold), and validated on read as in SQLite: a row that
  cannot be decoded is listed as unreadable beside the others.
- Reading never writes: listing a database that has no store yet creates nothing.
- A server that cannot be reached, a refused login or a missing psycopg is one
  line (`UserInputError`) naming the URL without its password.

Tables are prefixed (``modelmeter_runs``), so the store can share a database
with other programs' tables.
"""

from __future__ import annotations

import contextlib
import re
import secrets
import time
import urllib.parse
from collections.abc import Callable, Iterator
from datetime import timezone
from typing import TYPE_CHECKING, Any

from .core.errors import UserInputError

# SQLite's row decoding and model-name rule, shared so both backends read a row alike.
from .store import SCHEMA_VERSION, RunStore, StoredRun, check_config_hash, encode_run
from .store import _model_name as model_name

if TYPE_CHECKING:
    import psycopg

__all__ = ["PgRunStore", "is_postgres_url", "redact_url"]

URL_SCHEMES = ("postgresql://", "postgres://")
RUNS = "modelmeter_runs"
VERSION_TABLE = "modelmeter_schema"
# A fixed key for pg_advisory_xact_lock: every modelmeter that migrates takes the same one.
_MIGRATION_LOCK = 0x6D6D6574  # "mmet"
_CONNECT_TIMEOUT_S = 10
_RETRIES = 20
_ID_RE = re.compile(r"^[0-9a-f]{1,32}$")
_COLUMNS = "id, created_at, model, report_json, fingerprint_json, label, config_hash"


def is_postgres_url(db: object) -> bool:
    return isinstance(db, str) and db.lower().startswith(URL_SCHEMES)


def redact_url(url: str) -> str:
    """The URL with its password replaced by ***, for messages and listings."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "postgresql://…"
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    user = netloc[0].split(":", 1)[0]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[1]}"))


# --- schema ---------------------------------------------------------------
# Migration N takes a store at schema N to N+1, as in store.py; a new store runs
# them all. The columns mirror SQLite's, with the server's types.


def _create_v1(cur: psycopg.Cursor[Any]) -> None:
    # seq breaks ties between runs saved in the same microsecond (SQLite's rowid).
    cur.execute(
        f"CREATE TABLE {RUNS} ("
        " id TEXT PRIMARY KEY,"
        " seq BIGSERIAL NOT NULL,"
        " created_at TIMESTAMPTZ NOT NULL,"
        " report_json TEXT NOT NULL)"
    )


def _v1_to_v2(cur: psycopg.Cursor[Any]) -> None:
    cur.execute(f"ALTER TABLE {RUNS} ADD COLUMN model TEXT, ADD COLUMN fingerprint_json TEXT,"
                " ADD COLUMN label TEXT")
    cur.execute(f"CREATE INDEX {RUNS}_model_created ON {RUNS} (model, created_at)")
    cur.execute(f"CREATE INDEX {RUNS}_created ON {RUNS} (created_at)")


def _v2_to_v3(cur: psycopg.Cursor[Any]) -> None:
    # v3: the sweep configuration hash, indexed for a resuming sweep's look-ups.
    cur.execute(f"ALTER TABLE {RUNS} ADD COLUMN config_hash TEXT")
    cur.execute(f"CREATE INDEX {RUNS}_config_hash ON {RUNS} (config_hash, created_at)")


_MIGRATIONS: dict[int, Callable[[psycopg.Cursor[Any]], None]] = {
    0: _create_v1,
    1: _v1_to_v2,
    2: _v2_to_v3,
}
assert sorted(_MIGRATIONS) == list(range(SCHEMA_VERSION))


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError as exc:
        raise UserInputError(
            "a postgresql:// run store needs psycopg 3: pip install 'modelmeter[postgres]'"
        ) from exc
    return psycopg


class PgRunStore:
    """The run history in a PostgreSQL database; connects lazily, close with `close()` or `with`."""

    def __init__(self, url: str) -> None:
        if not is_postgres_url(url):
            raise UserInputError(f"{redact_url(url)!r} is not a postgresql:// URL")
        self.url = url
        self.location = redact_url(url)
        self._psycopg = _psycopg()
        self._conn: psycopg.Connection[Any] | None = None
        self._migrated = False

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
        conn = self._write_connection()
        errors = self._psycopg.errors
        retry = (errors.UniqueViolation, errors.SerializationFailure, errors.DeadlockDetected)
        delay = 0.005
        for _ in range(_RETRIES):
            # 32 random bits, as in SQLite; a drawn id already taken is drawn again.
            run_id = secrets.token_hex(4)
            try:
                with self._errors(), conn.transaction():
                    conn.execute(
                        f"INSERT INTO {RUNS} (id, created_at, model, report_json, fingerprint_json,"
                        " label, config_hash) VALUES (%s, clock_timestamp(), %s, %s, %s, %s, %s)",
                        (run_id, model_name(report), report_json, fingerprint_json, label,
                         config_hash),
                    )
            except UserInputError as exc:
                if not isinstance(exc.__cause__, retry):
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 0.2)
                continue
            return run_id
        raise UserInputError(f"could not save to {self.location} in {_RETRIES} tries; try again")

    def get(self, run_id: str) -> StoredRun:
        """The run whose id is `run_id` or starts with it (a unique prefix)."""
        prefix = run_id.strip().lower()
        if not _ID_RE.match(prefix):
            raise UserInputError(
                f"{run_id!r} is not a run id (run ids are hex, e.g. 3f9a01c2; "
                "`modelmeter history` lists them)"
            )
        rows = self._read(f"SELECT {_COLUMNS} FROM {RUNS} WHERE id LIKE %s ORDER BY id LIMIT 6",
                          (prefix + "%",))  # hex only: no LIKE metacharacters to escape
        if not rows:
            raise UserInputError(
                f"no run {run_id!r} in {self.location} (`modelmeter history` lists the stored runs)"
            )
        if len(rows) > 1:
            ids = ", ".join(row[0] for row in rows[:5])
            raise UserInputError(
                f"run id prefix {run_id!r} is ambiguous ({ids}{', …' if len(rows) > 5 else ''});"
                " give more characters"
            )
        run = _row_to_run(rows[0])
        if run.error is not None:
            raise UserInputError(f"run {run.id} in {self.location} cannot be read: {run.error}")
        return run

    def find_config(self, config_hash: str) -> StoredRun | None:
        """The latest readable run saved with `config_hash`, or None (as `RunStore.find_config`)."""
        check_config_hash(config_hash, allow_none=False)
        rows = self._read(f"SELECT {_COLUMNS} FROM {RUNS} WHERE config_hash = %s"
                          " ORDER BY created_at DESC, seq DESC", (config_hash,))
        for row in rows:
            run = _row_to_run(row)
            if run.error is None:
                return run
        return None

    def list_runs(self, model: str | None = None, limit: int = 50) -> list[StoredRun]:
        """Newest first; only runs of `model` when given. Unreadable rows come with `error` set."""
        if limit < 1:
            raise UserInputError(f"limit must be at least 1, got {limit}")
        where, params = ("WHERE model = %s", [model]) if model is not None else ("", [])
        rows = self._read(
            f"SELECT {_COLUMNS} FROM {RUNS} {where} ORDER BY created_at DESC, seq DESC LIMIT %s",
            (*params, limit),
        )
        return [_row_to_run(row) for row in rows]

    def check_writable(self) -> None:
        """Refuse now (UserInputError) a store that `save` would refuse; creates and changes nothing."""
        conn = self._connection()
        with self._errors(), conn.transaction():
            version = self._check_schema(conn)
            if version == 0:
                row = conn.execute("SELECT has_schema_privilege(current_schema(), 'CREATE')").fetchone()
                what = "create the store's tables in"
            else:
                row = conn.execute("SELECT has_table_privilege(%s, 'INSERT')", (RUNS,)).fetchone()
                what = "insert runs into"
            if not (row and row[0]):
                raise UserInputError(f"the user of {self.location} may not {what} this database; "
                                     "grant it, or use --db to pick another store")

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):  # a dead connection has nothing left to close
                self._conn.close()
            self._conn = None
        self._migrated = False

    def __enter__(self) -> PgRunStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals ------------------------------------------------------------

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            psycopg = self._psycopg
            try:
                # autocommit: every statement group runs in an explicit transaction() block.
                self._conn = psycopg.connect(self.url, autocommit=True,
                                             connect_timeout=_CONNECT_TIMEOUT_S,
                                             application_name="modelmeter")
            except psycopg.Error as exc:
                raise UserInputError(
                    f"cannot connect to the run store {self.location}: {self._why(exc)}"
                ) from exc
            except ValueError as exc:  # psycopg refuses some malformed URLs before libpq
                raise UserInputError(f"{self.location} is not a usable PostgreSQL URL: "
                                     f"{self._scrub(str(exc))}") from exc
        return self._conn

    def _read(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        """Rows of a query, or none when the database holds no store yet (never creates it)."""
        conn = self._connection()
        if not self._migrated:
            with self._errors(), conn.transaction():
                version = self._check_schema(conn)
            if version == 0:
                return []
            if version < SCHEMA_VERSION:
                # An older store: upgrading it is a write, done once, as SQLite's reader does.
                conn = self._write_connection()
            self._migrated = True  # current: no need to look again on this connection
        with self._errors(), conn.transaction():
            if self._check_schema(conn) == 0:  # dropped meanwhile
                return []
            return list(conn.execute(sql, params).fetchall())

    def _write_connection(self) -> psycopg.Connection[Any]:
        conn = self._connection()
        if self._migrated:
            return conn
        with self._errors(), conn.transaction():
            if self._check_schema(conn) != SCHEMA_VERSION:
                # One migrator at a time across every machine; the lock ends with the transaction.
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
                version = self._check_schema(conn)  # again: another may have migrated meanwhile
                with conn.cursor() as cur:
                    if version == 0:
                        cur.execute(f"CREATE TABLE {VERSION_TABLE} (version INTEGER NOT NULL)")
                        cur.execute(f"INSERT INTO {VERSION_TABLE} VALUES (0)")
                    for step in range(version, SCHEMA_VERSION):
                        _MIGRATIONS[step](cur)
                    cur.execute(f"UPDATE {VERSION_TABLE} SET version = %s", (SCHEMA_VERSION,))
        self._migrated = True
        return conn

    def _check_schema(self, conn: psycopg.Connection[Any]) -> int:
        """The store's schema version (0: no store yet); a newer or foreign one is refused."""
        # pg_class read by a query, not to_regclass: that one looks in a cache that an
        # advisory lock does not refresh, so a migrator that waited for another would
        # not see the tables it just made and try to make them again.
        has_version, has_runs = conn.execute(
            "SELECT bool_or(relname = %s), bool_or(relname = %s) FROM pg_catalog.pg_class"
            " WHERE relnamespace = (SELECT oid FROM pg_catalog.pg_namespace"
            " WHERE nspname = current_schema()) AND relname IN (%s, %s)",
            (VERSION_TABLE, RUNS, VERSION_TABLE, RUNS),
        ).fetchone()
        if not has_version:
            if has_runs:
                raise UserInputError(
                    f"{self.location} has a table {RUNS} that is not a modelmeter run store "
                    "(no schema version); use --db to pick another database"
                )
            return 0
        rows = conn.execute(f"SELECT version FROM {VERSION_TABLE}").fetchall()
        if len(rows) != 1 or not isinstance(rows[0][0], int):
            raise UserInputError(f"{self.location}: the table {VERSION_TABLE} is damaged "
                                 f"({len(rows)} rows); use --db to pick another database")
        version = int(rows[0][0])
        if version > SCHEMA_VERSION:
            raise UserInputError(
                f"{self.location} was written by a newer modelmeter (schema {version}); "
                "upgrade modelmeter or use --db to pick another store"
            )
        if version > 0 and not has_runs:
            raise UserInputError(f"{self.location} has a schema version but no {RUNS} table; "
                                 "use --db to pick another database")
        return version

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        """psycopg failures become one-line UserInputErrors naming the store (never its password)."""
        psycopg = self._psycopg
        try:
            yield
        except psycopg.OperationalError as exc:
            self.close()  # the connection is likely gone; the next call reconnects
            raise UserInputError(f"lost the run store {self.location}: {self._why(exc)}") from exc
        except psycopg.Error as exc:
            raise UserInputError(f"run store {self.location}: {self._why(exc)}") from exc

    def _why(self, exc: Exception) -> str:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        return self._scrub("; ".join(lines) or type(exc).__name__)

    def _scrub(self, text: str) -> str:
        try:
            password = urllib.parse.urlsplit(self.url).password
        except ValueError:
            password = None
        for secret in {password, urllib.parse.unquote(password or "")} - {None, ""}:
            text = text.replace(secret, "***")  # type: ignore[arg-type]
        return text


def _row_to_run(row: tuple[Any, ...]) -> StoredRun:
    run_id, created_at, *rest = row
    when = created_at.astimezone(timezone.utc).isoformat() if created_at is not None else ""
    return RunStore._row_to_run((run_id, when, *rest))


