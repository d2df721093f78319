"""How the long-running commands (``run``, ``serve``) behave as processes.

SIGTERM stops them as cleanly as Ctrl-C does: the scheduler ends its running attempts as
``interrupted``, stops its workers and removes their cgroups before the process exits.
"""

from __future__ import annotations

import signal
from types import FrameType


class Terminated(BaseException):
    """SIGTERM arrived: stop cleanly.

    A BaseException, like KeyboardInterrupt, so that no ``except Exception`` on the way
    out swallows it.
    """


def stop_on_sigterm() -> None:
    """From now on the first SIGTERM raises :class:`Terminated` in the main thread.

    Later ones are ignored (by a Python handler, not ``SIG_IGN``, which children would
    inherit): they must not cut short the cleanup the first one started; a supervisor
    that loses patience sends SIGKILL.
    """

    def ignore(signum: int, frame: FrameType | None) -> None:
        pass

    def terminate(signum: int, frame: FrameType | None) -> None:
        signal.signal(signal.SIGTERM, ignore)
        raise Terminated

    signal.signal(signal.SIGTERM, terminate)


__all__ = ["Terminated", "stop_on_sigterm"]
