"""Notifications: failures reported where people already look (Sentry, webhooks, JSON
logs), by the scheduler, on behalf of workers the kernel killed.

The seam: the scheduler builds one :class:`Notifier` from its config
(:func:`build_notifier`) and its attempt recorder calls ``notify(notice)`` with a frozen
:class:`AttemptNotice` as each attempt ends; the loop does the same with a
:class:`JobNotice` as a job starts or finishes. ``notify`` only queues: each channel
delivers from a bounded :class:`~oomguard.notify.base.Outbox` on its own thread.

This layer sits beside ``scheduler`` (which uses it) and imports nothing above ``config``,
``errors``, ``units``; ``sentry_sdk`` is imported only when a DSN is configured.
"""

from __future__ import annotations

from oomguard.notify.base import Fanout, MemoryNotifier, Notifier, Outbox, OutboxStats
from oomguard.notify.build import build_notifier
from oomguard.notify.notice import AttemptNotice, JobNotice, Notice, notice_fields

__all__ = [
    "AttemptNotice",
    "Fanout",
    "JobNotice",
    "MemoryNotifier",
    "Notice",
    "Notifier",
    "Outbox",
    "OutboxStats",
    "build_notifier",
    "notice_fields",
]
