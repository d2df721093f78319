"""Job, task, attempt and outcome types and the task decorator."""

from oomguard.jobs.model import FailureClass, Outcome, TaskState
from oomguard.jobs.task import TaskFunction, TaskOptions, load, options_of, reference_of, task

__all__ = [
    "FailureClass",
    "Outcome",
    "TaskFunction",
    "TaskOptions",
    "TaskState",
    "load",
    "options_of",
    "reference_of",
    "task",
]
