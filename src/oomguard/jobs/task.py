"""The ``@oomguard.task`` decorator and task references.

A task is named by a *reference*: ``package.module:function`` or
``path/to/file.py:function``. References are what the store keeps and what workers
import, so a function defined in a script's ``__main__`` is named by its file.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import hashlib
import importlib
import importlib.util
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Generic, ParamSpec, TypeVar, overload

from oomguard.errors import ConfigError, MainGuardError, TaskReferenceError
from oomguard.units import parse_size

#: the task a worker is loading, while it loads it: a Runner started then is a module
#: without ``if __name__ == "__main__":`` (:func:`refuse_in_worker_import`). A context
#: variable, not the environment: a process the import starts does not inherit it, and
#: setting it costs nothing on the hot path of short tasks.
_WORKER_IMPORT: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "oomguard_worker_import", default=None
)

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True)
class TaskOptions:
    retries: int = 0
    timeout: float | None = None
    memory: int | None = None
    memory_key: str | None = None
    lock: str | None = None
    oom_retries: int = 3


class TaskFunction(Generic[P, R]):
    """A function with oomguard options; calling it calls the function."""

    def __init__(self, fn: Callable[P, R], options: TaskOptions) -> None:
        self.fn = fn
        self.options = options
        functools.update_wrapper(self, fn)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<oomguard task {reference_of(self.fn)}>"


@overload
def task(
    fn: Callable[P, R],
    *,
    retries: int = ...,
    timeout: float | None = ...,
    memory: str | int | None = ...,
    memory_key: str | None = ...,
    lock: str | None = ...,
    oom_retries: int = ...,
) -> TaskFunction[P, R]: ...


@overload
def task(
    fn: None = None,
    *,
    retries: int = ...,
    timeout: float | None = ...,
    memory: str | int | None = ...,
    memory_key: str | None = ...,
    lock: str | None = ...,
    oom_retries: int = ...,
) -> Callable[[Callable[P, R]], TaskFunction[P, R]]: ...


def task(
    fn: Callable[P, R] | None = None,
    *,
    retries: int = 0,
    timeout: float | None = None,
    memory: str | int | None = None,
    memory_key: str | None = None,
    lock: str | None = None,
    oom_retries: int = 3,
) -> TaskFunction[P, R] | Callable[[Callable[P, R]], TaskFunction[P, R]]:
    """Declare a task's options: ``@oomguard.task(retries=2, timeout=60, memory="2GiB")``.

    ``lock`` is a format string over the task's keyword arguments
    (``lock="email:{user_id}"``): tasks with the same formatted key never run at once.
    ``memory_key`` names the parameter whose value keys learned memory estimates.
    """
    if retries < 0 or oom_retries < 0:
        raise ConfigError("retries and oom_retries must be >= 0")
    if timeout is not None and timeout <= 0:
        raise ConfigError("timeout must be > 0 seconds")
    options = TaskOptions(
        retries=retries,
        timeout=timeout,
        memory=parse_size(memory) if memory is not None else None,
        memory_key=memory_key,
        lock=lock,
        oom_retries=oom_retries,
    )

    def wrap(f: Callable[P, R]) -> TaskFunction[P, R]:
        return TaskFunction(f, options)

    if fn is not None:
        return wrap(fn)
    return wrap


def options_of(fn: object) -> TaskOptions:
    return fn.options if isinstance(fn, TaskFunction) else TaskOptions()


def unwrap(fn: object) -> Callable[..., object]:
    target = fn.fn if isinstance(fn, TaskFunction) else fn
    assert callable(target)
    return target


def reference_of(fn: object) -> str:
    """The reference under which workers can import ``fn``."""
    from oomguard.jobs.command import Command

    if isinstance(fn, str):
        return fn
    if isinstance(fn, Command):
        return fn.reference
    target = unwrap(fn)
    module = getattr(target, "__module__", None)
    qualname = getattr(target, "__qualname__", None)
    if not module or not qualname or "<locals>" in qualname or "<lambda>" in qualname:
        raise TaskReferenceError(
            f"{fn!r} cannot be named by an import path: define it at module level",
            ref=repr(fn),
        )
    if module == "__main__" or module.startswith("_oomguard_file_"):
        path = getattr(sys.modules.get(module), "__file__", None)
        if path is None:
            raise TaskReferenceError(
                f"{qualname} is defined in an interactive session: put it in a module or file",
                ref=qualname,
            )
        return f"{os.path.abspath(path)}:{qualname}"
    return f"{module}:{qualname}"


def _split(ref: str) -> tuple[str, str]:
    if ":" not in ref:
        raise TaskReferenceError(
            f"invalid task reference {ref!r}: use module:function or path/to/file.py:function",
            ref=ref,
        )
    where, _, name = ref.rpartition(":")
    if not where or not name:
        raise TaskReferenceError(f"invalid task reference {ref!r}", ref=ref)
    return where, name


def _import_file(path: str) -> ModuleType:
    full = os.path.abspath(path)
    if not os.path.isfile(full):
        raise TaskReferenceError(f"no such file {path!r}", ref=path)
    # A private module name, so the file's `if __name__ == "__main__":` block does not run.
    name = "_oomguard_file_" + hashlib.sha1(full.encode()).hexdigest()[:12]
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, full)
    if spec is None or spec.loader is None:
        raise TaskReferenceError(f"cannot import {path!r}", ref=path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    # Loaded by its path only: its directory is not put on sys.path, where a file beside
    # it (a planted pyarrow.py) would shadow what this process imports later.
    try:
        spec.loader.exec_module(module)
    except MainGuardError:
        del sys.modules[name]
        raise  # its own message says what to do
    except Exception as err:
        del sys.modules[name]
        raise TaskReferenceError(
            f"importing {path!r} failed: {type(err).__name__}: {err}", ref=path
        ) from err
    return module


@contextlib.contextmanager
def worker_import(ref: str) -> Iterator[None]:
    """Mark the worker's import of ``ref``'s module (see :func:`refuse_in_worker_import`)."""
    token = _WORKER_IMPORT.set(ref)
    try:
        yield
    finally:
        _WORKER_IMPORT.reset(token)


def refuse_in_worker_import(what: str) -> None:
    """Raise :class:`~oomguard.errors.MainGuardError` if a worker is importing a task's
    module right now: the module starts ``what`` at import, and would start it again in
    every worker (as multiprocessing refuses a missing ``__main__`` guard)."""
    ref = _WORKER_IMPORT.get()
    if ref is None:
        return
    where = ref.rpartition(":")[0] or ref
    raise MainGuardError(
        f"{what} was started while an oomguard worker imported {where} to find the task "
        f"{ref}: that module starts {what} when it is imported. Put the code that starts "
        'it under `if __name__ == "__main__":` so that workers can import the module\'s '
        "tasks without running it",
        ref=ref,
    )


def load(ref: str, task_dir: str | None = None) -> Callable[..., object]:
    """Import the callable named by ``ref`` (a TaskFunction stays wrapped).

    A module is imported from ``sys.path``, and then from ``task_dir`` (the caller's
    directory, :attr:`~oomguard.config.RunnerConfig.task_dir`), which is searched *after*
    everything installed: a file there never shadows an installed module. A file
    reference is loaded from its path alone. A ``cmd:`` reference is a
    :class:`~oomguard.jobs.command.Command`.
    """
    from oomguard.jobs.command import from_reference, is_command

    if is_command(ref):
        return from_reference(ref)
    where, name = _split(ref)
    if where.endswith(".py") or os.sep in where:
        module = _import_file(where)
    else:
        if task_dir and task_dir not in sys.path:
            sys.path.append(task_dir)
        try:
            module = importlib.import_module(where)
        except ModuleNotFoundError as err:
            raise TaskReferenceError(f"no module named {where!r} (in {ref!r})", ref=ref) from err
        except MainGuardError:
            raise
        except Exception as err:
            raise TaskReferenceError(
                f"importing {where!r} failed: {type(err).__name__}: {err}", ref=ref
            ) from err
    obj: object = module
    for part in name.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise TaskReferenceError(
                f"{where!r} has no function {name!r} (in {ref!r})", ref=ref
            ) from None
    if not callable(obj):
        raise TaskReferenceError(f"{ref!r} is not callable", ref=ref)
    return obj
