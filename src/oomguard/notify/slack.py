"""Text for people in a webhook body (``text``), safe to show in Slack.

Slack reads ``<...>`` in a message's text as a control sequence: ``<!channel>`` pings a
whole channel, ``<https://evil.example|re-enter your token>`` shows a link under any
words. Task names, messages and functions are the users' strings, so the text escapes
``&``, ``<`` and ``>`` as Slack specifies (``&amp;``, ``&lt;``, ``&gt;``) and cuts each
user string to :data:`MAX_USER_TEXT` characters (the whole line to :data:`MAX_TEXT`). The
raw values stay in the body's JSON fields, for programs. See docs/ARCHITECTURE.md
("Notifications").
"""

from __future__ import annotations

import dataclasses

from oomguard.notify.notice import JobNotice, Notice, summary

#: characters of each user string (job name, function, message) in ``text``
MAX_USER_TEXT = 200
#: characters of the whole ``text``
MAX_TEXT = 1000


def slack_escape(text: str) -> str:
    """``&``, ``<`` and ``>`` escaped as Slack's message formatting requires."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def cap(text: str | None, limit: int = MAX_USER_TEXT) -> str | None:
    if text is None or len(text) <= limit:
        return text
    return text[: limit - 1] + "…"


def slack_text(notice: Notice) -> str:
    """``oomguard: <summary>`` with user strings capped, then escaped for Slack."""
    if isinstance(notice, JobNotice):
        shown: Notice = dataclasses.replace(
            notice, name=cap(notice.name), function=cap(notice.function)
        )
    else:
        message = notice.message.splitlines()[0] if notice.message else notice.message
        shown = dataclasses.replace(
            notice, function=cap(notice.function) or "", message=cap(message)
        )
    return slack_escape(cap("oomguard: " + summary(shown), MAX_TEXT) or "")


__all__ = ["MAX_TEXT", "MAX_USER_TEXT", "cap", "slack_escape", "slack_text"]
