"""The notifier a scheduler's config asks for (None when it asks for none)."""

from __future__ import annotations

from pathlib import Path

from oomguard.config import RunnerConfig
from oomguard.errors import ConfigError
from oomguard.notify.base import Fanout, Notifier


def read_secret(path: str) -> bytes:
    """The HMAC key in ``path`` (surrounding whitespace stripped); a clear error if it
    cannot be read or is empty."""
    try:
        secret = Path(path).read_bytes().strip()
    except OSError as err:
        raise ConfigError(
            f"cannot read --notify-secret-file {path!r}: {err.strerror or err}"
        ) from None
    if not secret:
        raise ConfigError(f"--notify-secret-file {path!r} is empty")
    return secret


def check_notifications(config: RunnerConfig) -> None:
    """Raise :class:`~oomguard.errors.ConfigError` for notification settings that cannot
    work (the ``sentry`` extra missing, an invalid DSN, a secret file that cannot be read),
    before anything is started or opened."""
    if config.notify_secret_file:
        read_secret(config.notify_secret_file)
    if config.sentry_dsn:
        from oomguard.notify.sentry import check_dsn

        check_dsn(config.sentry_dsn)


def build_notifier(config: RunnerConfig) -> Notifier | None:
    """Sentry, webhooks and JSON log lines, as ``config`` says; None for none of them.

    Raises :class:`~oomguard.errors.ConfigError` (before any thread starts) for a DSN
    without the ``sentry`` extra, an invalid DSN, or a secret file that cannot be read.
    """
    secret = read_secret(config.notify_secret_file) if config.notify_secret_file else None
    notifiers: list[Notifier] = []
    if config.sentry_dsn:
        from oomguard.notify.sentry import SentryNotifier

        notifiers.append(
            SentryNotifier(
                config.sentry_dsn, queue_size=config.notify_queue, timeout=config.notify_timeout
            )
        )
    if config.notify_url:
        from oomguard.notify.webhook import WebhookNotifier

        notifiers.append(
            WebhookNotifier(
                config.notify_url,
                on=config.notify_on,
                secret=secret,
                queue_size=config.notify_queue,
                timeout=config.notify_timeout,
            )
        )
    if config.log_format == "json":
        from oomguard.notify.jsonlog import JsonLogNotifier

        notifiers.append(JsonLogNotifier(queue_size=max(config.notify_queue, 10000)))
    if not notifiers:
        return None
    return notifiers[0] if len(notifiers) == 1 else Fanout(notifiers)
