"""The notifier a scheduler's config asks for (None when it asks for none)."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import TYPE_CHECKING

from oomguard.config import RunnerConfig
from oomguard.errors import ConfigError
from oomguard.notify.base import Fanout, Notifier
from oomguard.notify.notice import AttemptNotice

if TYPE_CHECKING:
    from oomguard.notify.durable import DurableWebhooks
from oomguard.notify.secrets import Redactor, read_lines, secret_parts

#: keys a secret file may hold: the current one, and the next during a rotation
MAX_KEYS = 2
#: the prefix of a Standard Webhooks secret (the key follows, base64)
WHSEC = "whsec_"


def read_secret(path: str) -> bytes:
    """The first (signing) key in ``path``; see :func:`read_keys`."""
    return read_keys(path)[0]


def read_keys(path: str) -> tuple[bytes, ...]:
    """The HMAC keys in the secret file ``path``, one a line (two during a rotation). A
    line ``whsec_<base64>`` (a Standard Webhooks secret) is the key it encodes; any other
    line is the key as it is written. The file must be private to its owner
    (:func:`~oomguard.notify.secrets.check_secret_file`)."""
    lines = read_lines(path, "--notify-secret-file")
    if len(lines) > MAX_KEYS:
        raise ConfigError(
            f"--notify-secret-file {path!r} holds {len(lines)} keys: at most {MAX_KEYS} "
            "(the current one, and the next during a rotation)"
        )
    keys = []
    for n, line in enumerate(lines, 1):
        if line.startswith(WHSEC):
            try:
                keys.append(base64.b64decode(line[len(WHSEC) :], validate=True))
            except (binascii.Error, ValueError):
                raise ConfigError(
                    f"--notify-secret-file {path!r}: key {n} starts with {WHSEC} but the "
                    "rest is not base64"
                ) from None
        else:
            keys.append(line.encode())
    return tuple(keys)


def redactor(config: RunnerConfig, keys: tuple[bytes, ...] = ()) -> Redactor:
    """The redaction of ``config``: its ``redact`` patterns, and the channels' own secrets
    (webhook URLs, the DSN, the signing keys) wherever they show up in a message."""
    secrets: list[str] = []
    for url in (*config.notify_url, *([config.sentry_dsn] if config.sentry_dsn else [])):
        secrets += secret_parts(url)
    secrets += [key.decode("utf-8", "replace") for key in keys]
    return Redactor(config.redact, secrets)


def check_notifications(config: RunnerConfig) -> None:
    """Raise :class:`~oomguard.errors.ConfigError` for notification settings that cannot
    work (the ``sentry`` extra missing, an invalid DSN, a secret file that cannot be read
    or that others may read), before anything is started or opened."""
    if config.notify_secret_file:
        read_keys(config.notify_secret_file)
    redactor(config)
    if config.sentry_dsn:
        from oomguard.notify.sentry import check_dsn

        check_dsn(config.sentry_dsn)


def build_notifier(config: RunnerConfig) -> Notifier | None:
    """Sentry, webhooks and JSON log lines, as ``config`` says; None for none of them.

    Raises :class:`~oomguard.errors.ConfigError` (before any thread starts) for a DSN
    without the ``sentry`` extra, an invalid DSN, or a secret file that cannot be read.
    """
    keys = read_keys(config.notify_secret_file) if config.notify_secret_file else ()
    scrub = redactor(config, keys)
    notifiers: list[Notifier] = []
    if config.sentry_dsn:
        from oomguard.notify.sentry import SentryNotifier

        notifiers.append(
            SentryNotifier(
                config.sentry_dsn,
                queue_size=config.notify_queue,
                timeout=config.notify_timeout,
                redactor=scrub,
            )
        )
    if config.notify_url:
        from oomguard.notify.durable import DurableWebhooks

        # Delivered from the store's outbox: what a stop leaves undelivered, the next
        # start delivers.
        notifiers.append(
            DurableWebhooks(
                config.store,
                config.notify_url,
                on=config.notify_on,
                keys=keys,
                timeout=config.notify_timeout,
                redactor=scrub,
                most=config.notify_outbox,
            )
        )
    if config.log_format == "json":
        from oomguard.notify.jsonlog import JsonLogNotifier

        notifiers.append(JsonLogNotifier(queue_size=max(config.notify_queue, 10000)))
    if not notifiers:
        return None
    return notifiers[0] if len(notifiers) == 1 else Fanout(notifiers)


def _durable(notifier: Notifier | None) -> DurableWebhooks | None:
    from oomguard.notify.durable import DurableWebhooks

    found = notifier.notifiers if isinstance(notifier, Fanout) else [notifier]
    return next((one for one in found if isinstance(one, DurableWebhooks)), None)


def outbox_filter(notifier: Notifier | None) -> Callable[[AttemptNotice], bool] | None:
    """Which attempt notices go into the store's outbox (those its durable webhooks are to
    get); None when there are no such webhooks."""
    durable = _durable(notifier)
    return durable.keeps if durable is not None else None


def start_outbox(
    notifier: Notifier | None, scheduler_id: str | None = None, lease_ttl: float = 30.0
) -> None:
    """Start delivering from the store's outbox, once scheduler ``scheduler_id`` registered
    (it delivers to a receiver while it holds its cursor: one replica at a time)."""
    durable = _durable(notifier)
    if durable is not None:
        durable.start(scheduler_id, lease_ttl)
