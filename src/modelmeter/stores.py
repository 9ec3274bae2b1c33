"""Which run store a `--db` names (layer 4): an SQLite file or a PostgreSQL server.

``open_store(db)``: a ``postgresql://`` or ``postgres://`` URL opens the team
store on that server (`store_pg.PgRunStore`, the ``[postgres]`` extra); a path
opens that SQLite file (`store.RunStore`); None takes ``$MODELMETER_DB`` when
set, else the default SQLite file. Both have the same methods and promises.
"""

from __future__ import annotations

import os
from pathlib import Path

from .core.errors import UserInputError
from .store import RunStore
from .store_pg import PgRunStore, is_postgres_url

__all__ = ["DB_ENV", "AnyStore", "open_store", "store_location"]

DB_ENV = "MODELMETER_DB"
AnyStore = RunStore | PgRunStore


def open_store(db: str | Path | None = None) -> AnyStore:
    """The store `db` names (see the module docstring); nothing is opened until first use."""
    if db is None or (isinstance(db, str) and not db.strip()):
        db = os.environ.get(DB_ENV, "").strip() or None
    if db is None:
        return RunStore(None)
    if is_postgres_url(str(db)):
        return PgRunStore(str(db))
    path = Path(db).expanduser()
    if path.is_dir():  # what click's path check said before --db also took URLs
        raise UserInputError(f"--db {path} is a directory, not a run store file; give a file "
                             "path or a postgresql:// URL")
    return RunStore(path)


def store_location(store: AnyStore) -> str:
    """Where the store lives, for messages: the file, or the URL without its password."""
    return store.location if isinstance(store, PgRunStore) else str(store.path)
