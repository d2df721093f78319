"""Retry decisions: what happens to a task after a failed attempt. Pure: each function
returns a :class:`Decision` (or a text); the recorder applies it (estimates included).

* OOM classes (and ``memory_error``) are retried at once with a larger estimate: at least
  double the limit the attempt had and above its peak, up to the most one task may get
  (``cap``). Killed *at* the cap, or past ``oom_retries`` OOM kills, the task fails for good
  as ``needs_more_memory`` with the numbers.
* ``lost`` (the scheduler died) is retried at once: not the task's fault.
* ``killed`` / ``crashed`` (a worker death with no OOM evidence) are retried up to
  ``max(retries, death_retries)`` times; ``error`` / ``timeout`` up to ``retries`` times;
  both with exponential backoff.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from oomguard.jobs.model import FailureClass
from oomguard.scheduler.admission import KeyState, escalate
from oomguard.units import format_size

if TYPE_CHECKING:
    from oomguard.scheduler.running import Running

#: OOM kills at the attempt's own limit: they say what its memory key needs (a
#: MemoryError says what one allocation of one task could not get: that task's own retry)
OWN_LIMIT_KILLS = frozenset({FailureClass.OOM_CGROUP, FailureClass.OOM_WATCHDOG})


@dataclass(frozen=True)
class RetryPolicy:
    death_retries: int = 3
    backoff: float = 0.5
    backoff_max: float = 60.0


@dataclass(frozen=True)
class Decision:
    #: when to run the task again (wall time), or None: it failed for good
    retry_at: float | None
    #: the task's class when it failed for good
    final_class: FailureClass
    #: the task's memory estimate for its next attempt (None: unchanged)
    memory: int | None
    message: str


def decide(
    fc: FailureClass,
    *,
    policy: RetryPolicy,
    now: float,
    attempt: int,
    oom_attempts: int,
    retries: int,
    oom_retries: int,
    limit: int,
    peak: int | None,
    memory: int | None,
    cap: int,
    message: str | None = None,
) -> Decision:
    """Decide after attempt number ``attempt`` failed with ``fc``.

    ``oom_attempts`` counts this attempt when it is an OOM class.
    """
    text = message or fc.value
    if fc.is_oom:
        if limit >= cap or oom_attempts > oom_retries:
            reached = peak or limit
            return Decision(
                None,
                FailureClass.NEEDS_MORE_MEMORY,
                None,
                f"needs more memory than oomguard can give: killed ({fc.value}) with a limit of "
                f"{format_size(limit)} after reaching {format_size(reached)}; the most one task "
                f"may get here is {format_size(cap)} (--worker-memory / --memory-budget); "
                f"{oom_attempts} OOM kill(s)",
            )
        # At the top it runs alone, with all that one task may get.
        new = min(escalate(limit, peak, memory or 0), cap)
        return Decision(now, fc, new, text)
    if fc == FailureClass.LOST:
        return Decision(now, fc, None, text)
    death = fc in (FailureClass.KILLED, FailureClass.CRASHED)
    allowed = max(retries, policy.death_retries) if death else retries
    errors = attempt - oom_attempts
    if errors <= allowed:
        delay = min(policy.backoff * 2 ** (errors - 1), policy.backoff_max)
        return Decision(now + delay, fc, None, text)
    return Decision(None, fc, None, text)


def unfit_message(key: str | None, proof: str, cap: int) -> str:
    """Why a task of ``key``, proved unfit by ``proof``, fails without running."""
    return (
        f"needs more memory than oomguard can give: memory key {key!r} was OOM-killed with "
        f"the most one task may get here ({format_size(cap)}, --worker-memory / "
        f"--memory-budget): {proof}; its tasks do not run again until that "
        "grows"
    )


def kill_proof(run: Running, fc: FailureClass, peak: int | None) -> str:
    """What an OOM kill of ``run`` at its own limit proves about its key."""
    return (
        f"attempt {run.attempt_id} (task {run.task.id}) was OOM-killed ({fc.value}) "
        f"with a limit of {format_size(run.limit)}"
        + (f" after reaching {format_size(peak)}" if peak else "")
    )


def after_key_kill(decision: Decision, state: KeyState, unfit: str) -> Decision:
    """``decision`` once an OOM kill at the attempt's own limit was folded into its key
    (now in ``state``): a key proved unfit (killed at the cap, now or before) fails the
    task without another try, saying ``unfit``."""
    if state is not KeyState.UNFIT or decision.retry_at is None:
        return decision
    return Decision(None, FailureClass.NEEDS_MORE_MEMORY, None, unfit)
