"""Exit codes of the ``oomguard`` command (documented in the README)."""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    OK = 0
    #: the job finished but some tasks failed for good
    TASKS_FAILED = 1
    #: bad command line, option value, size or config
    USAGE = 2
    #: the task/aggregation function, job or file named does not exist
    NOT_FOUND = 3
    #: the store cannot be used (not a store, newer schema, busy)
    STORE = 4
    #: the memory isolation asked for is not available
    ISOLATION = 5
    #: the server refused the submission (queue full, quota, memory pressure)
    BACKPRESSURE = 6
    #: the kernel log or another diagnosis source cannot be read
    UNAVAILABLE = 7
    #: the output directory cannot be used
    OUTPUT = 8
    #: bad task arguments (not a JSON object, unpicklable, too large)
    PAYLOAD = 9
    #: a server could not be reached
    CONNECTION = 10
    #: `oomguard doctor` found problems that must be fixed
    DOCTOR_FAILED = 11
    #: the job still has work in flight (`oomguard forget` refuses)
    JOB_ACTIVE = 12
    #: the scheduler loop died of a bug (its traceback is on stderr): `run` stops, `serve`
    #: exits so that its supervisor restarts it; the next scheduler resumes the work
    SCHEDULER_DIED = 13
    #: stopped by Ctrl-C (SIGINT); running attempts were ended as interrupted
    INTERRUPTED = 130
    #: `run` stopped by SIGTERM; running attempts were ended as interrupted (`serve` exits
    #: 0 on SIGTERM: a clean shutdown)
    TERMINATED = 143
