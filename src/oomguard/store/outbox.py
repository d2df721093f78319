"""The notification outbox of a store: notices waiting for the webhooks, and where each
receiver is in them.

The scheduler writes a row in the transaction that records what caused it (one
``insert_outbox`` in the grouped commit per failed attempt: nothing per success; a job's
notice in a small transaction of its own), so a notice exists exactly when what it tells
is stored. Each receiver reads the rows after its cursor in id order and moves the cursor
past each row it delivered or gave up on: a restart goes on from there, and nothing is
delivered twice. Rows every receiver has passed are deleted; past ``most`` rows the oldest
are deleted too, and counted (``counters``: ``outbox_dropped``): a receiver that is down
for long gets a gap, never an unbounded store. See docs/ARCHITECTURE.md ("Notifications").
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from oomguard.jobs.jsonvalue import JSONObject
from oomguard.store.failures import translated
from oomguard.store.queries import Q

if TYPE_CHECKING:
    from oomguard.store.connection import Connection
    from oomguard.store.views import Queries

#: the counter of rows deleted before every receiver had them
DROPPED = "outbox_dropped"
#: the meta key of the name this store's deliveries carry (``webhook-id``)
NAME_KEY = "outbox_name"


@dataclass(frozen=True)
class OutboxRow:
    id: int
    ts: float
    kind: str
    #: the notice's fields (JSON, as ``notify.notice.to_json`` wrote them)
    notice: JSONObject


def receiver_key(url: str) -> str:
    """What a receiver's cursor is kept under: a digest of its URL, never the URL."""
    return hashlib.sha256(url.encode("utf-8", "surrogatepass")).hexdigest()


@translated
class Outbox:
    def __init__(self, conn: Connection, queries: Queries) -> None:
        self._conn = conn
        self._queries = queries

    def add(self, ts: float, kind: str, notice: str) -> int:
        """A row in a transaction of its own (a job's notice); its id."""
        with self._conn.transaction() as db:
            cur = db.execute(Q["outbox_add"], (ts, kind, notice))
            return int(cur.lastrowid or 0)

    def name(self) -> str:
        """This store's name in delivery ids (made once, kept in ``meta``)."""
        found = self._queries.meta(NAME_KEY)
        if found is not None:
            return found
        with self._conn.transaction() as db:
            db.execute(
                Q["meta_default"],
                (NAME_KEY, secrets.token_hex(6)),
            )
        return self._queries.meta(NAME_KEY) or ""

    def cursor(self, receiver: str) -> int:
        """``receiver``'s cursor; a new receiver starts after the rows there are now."""
        with self._conn.transaction() as db:
            db.execute(
                Q["outbox_cursor_start"],
                (receiver,),
            )
            row = db.execute(Q["outbox_cursor"], (receiver,)).fetchone()
        return int(row[0])

    def hold(self, receiver: str, holder: str, seconds: float) -> int | None:
        """Hold ``receiver``'s cursor for scheduler ``holder`` for ``seconds`` (renewed at
        each call): its cursor, or None while another scheduler holds it. Several
        schedulers (replicas) on one store deliver each row once: the holder does."""
        now = time.time()
        with self._conn.transaction() as db:
            db.execute(Q["outbox_cursor_start"], (receiver,))
            row = db.execute(
                Q["outbox_hold"],
                {"holder": holder, "until": now + seconds, "receiver": receiver, "now": now},
            ).fetchone()
        return None if row is None else int(row[0])

    def after(self, cursor: int, limit: int) -> list[OutboxRow]:
        """The rows after ``cursor``, in order."""
        rows = self._conn.db.execute(
            Q["outbox_after"],
            (cursor, limit),
        ).fetchall()
        return [OutboxRow(int(i), float(ts), str(k), json.loads(n)) for i, ts, k, n in rows]

    def advance(self, receiver: str, delivered: int) -> None:
        with self._conn.transaction() as db:
            db.execute(
                Q["outbox_advance"],
                (delivered, receiver),
            )

    def trim(self, receivers: Sequence[str], most: int) -> int:
        """Delete the rows every one of ``receivers`` has passed, then the oldest beyond
        ``most`` rows (counted in ``outbox_dropped``); the number dropped."""
        with self._conn.transaction() as db:
            if receivers:
                low = db.execute(
                    Q["outbox_low_cursor"],
                    (json.dumps(list(receivers)),),
                ).fetchone()
                if low[1] == len(receivers) and low[0] is not None:
                    db.execute(Q["outbox_trim"], (low[0],))
            top = db.execute(Q["outbox_top"]).fetchone()[0]
            if top is None:
                return 0
            dropped = db.execute(Q["outbox_trim"], (top - most,)).rowcount
            if dropped:
                db.execute(
                    Q["outbox_count_dropped"],
                    (DROPPED, dropped),
                )
            return int(dropped)

    def count_after(self, cursor: int) -> int:
        """Rows after ``cursor`` (what a receiver there has still to deliver)."""
        row = self._conn.db.execute(Q["outbox_count_after"], (cursor,))
        return int(row.fetchone()[0])

    def waiting(self) -> int:
        """Rows in the outbox (not yet passed by every receiver)."""
        return int(self._conn.db.execute(Q["outbox_count"]).fetchone()[0])

    def dropped(self) -> int:
        return self._queries.counter(DROPPED)


__all__ = ["DROPPED", "Outbox", "OutboxRow", "receiver_key"]
