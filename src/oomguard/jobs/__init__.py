"""Job, task, attempt and outcome types and the task decorator."""

from oomguard.jobs.model import FINISHED_STATES, OPEN_STATES, FailureClass, TaskState
from oomguard.jobs.task import TaskFunction, TaskOptions, load, options_of, reference_of, task

__all__ = [
    "FINISHED_STATES",
    "OPEN_STATES",
    "FailureClass",
    "TaskFunction",
    "TaskOptions",
    "TaskState",
    "load",
    "options_of",
    "reference_of",
    "task",
]
