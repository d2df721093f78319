"""One :class:`~oomguard.store.sqlite.Store` per thread (an SQLite connection belongs
to the thread that opened it), all closed together: for the HTTP server's and the
dashboard's request threads."""

from __future__ import annotations

import sqlite3
import threading
from contextlib import suppress

from oomguard.store.factory import open_store
from oomguard.store.protocol import Store


class ThreadStores:
    def __init__(self, path: str, *, readonly: bool = False) -> None:
        self.path = path
        self.readonly = readonly
        self._local = threading.local()
        self._all: list[Store] = []
        self._lock = threading.Lock()

    def get(self) -> Store:
        store: Store | None = getattr(self._local, "store", None)
        if store is None:
            store = open_store(self.path, readonly=self.readonly)
            self._local.store = store
            with self._lock:
                self._all.append(store)
        return store

    def close(self) -> None:
        with self._lock:
            for store in self._all:
                with suppress(sqlite3.Error):
                    store.close()
            self._all.clear()
