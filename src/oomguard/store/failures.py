"""The store's error boundary: ``sqlite3`` errors become oomguard's store errors as they
leave the store, so nothing above ``store/`` knows the backend (docs/ARCHITECTURE.md, "The
store"; psutil's ``wrap_exceptions`` is the model).

A ``sqlite3.OperationalError`` (a full disk, a lock held past the busy timeout, a write to
a read-only store) is :class:`~oomguard.errors.StoreUnavailable`: the store itself fails,
nothing the caller wrote. Every other ``sqlite3.Error`` (a value SQLite refuses, a broken
constraint) is :class:`~oomguard.errors.StoreError`.
"""

from __future__ import annotations

import functools
import inspect
import sqlite3
from collections.abc import Callable, Iterator
from typing import ParamSpec, TypeVar

from oomguard.errors import StoreError, StoreUnavailable

P = ParamSpec("P")
R = TypeVar("R")
C = TypeVar("C", bound=type)


def translate(err: sqlite3.Error) -> StoreError:
    """oomguard's error for ``err``."""
    if isinstance(err, sqlite3.OperationalError):
        return StoreUnavailable(f"the store cannot be used now: {err}", reason=str(err))
    return StoreError(f"the store refused a statement: {err}", reason=str(err))


def _wrapped(fn: Callable[P, R]) -> Callable[P, R]:
    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def generator(*args: P.args, **kwargs: P.kwargs) -> Iterator[object]:
            try:
                yield from fn(*args, **kwargs)
            except sqlite3.Error as err:
                raise translate(err) from err

        return generator  # type: ignore[return-value]

    @functools.wraps(fn)
    def call(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except sqlite3.Error as err:
            raise translate(err) from err

    return call


def translated(cls: C) -> C:
    """``cls`` with its constructor and every public method translating ``sqlite3`` errors
    (:func:`translate`). Private methods run inside public ones; properties and the other
    dunders are left alone."""
    for name, member in list(vars(cls).items()):
        public = not name.startswith("_") or name == "__init__"
        if public and inspect.isfunction(member):
            setattr(cls, name, _wrapped(member))
    return cls


__all__ = ["translate", "translated"]
