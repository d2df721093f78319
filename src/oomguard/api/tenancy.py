"""Who a request is: bearer tokens mapped to a label, a role and the namespaces they reach.

A server has one of three kinds of access (``serve``):

* **open** (no token; loopback only): every request is the anonymous admin of every
  namespace;
* **one token** (``--token-file``): that token is the admin of every namespace;
* **a tokens file** (``--tokens-file``): a TOML file, private to its owner
  (:func:`~oomguard.private_files.check_private`), one table per token::

      [tokens.team-a-ci]            # the label: what the audit log names
      token = "..."                 # at least 16 characters
      role = "submit"               # read, submit or admin
      namespaces = ["team-a"]       # or ["*"]: every namespace

Roles are ordered: ``read`` reads jobs, tasks and ``/metrics``; ``submit`` also submits,
cancels and forgets jobs; ``admin`` also forgets with ``force`` and reads the heap report.
A job of a namespace the caller does not reach is answered as missing (404), never 403:
a caller learns nothing of what it may not see. Tokens are kept only as SHA-256 digests,
looked up by digest (no comparison of the secret itself to time). See
docs/ARCHITECTURE.md ("Tenancy").
"""

from __future__ import annotations

import enum
import hashlib
import os
import re
import sys
from collections.abc import Collection, Mapping
from dataclasses import dataclass

from oomguard.api.schemas import NAMESPACE_PATTERN
from oomguard.errors import ConfigError
from oomguard.private_files import read_private

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib  # type: ignore[import-not-found, unused-ignore]

#: the fewest characters a token has
MIN_TOKEN = 16
#: what a label may be (it is written to logs)
LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
#: a namespace as a submission may name it
NAMESPACE = re.compile(NAMESPACE_PATTERN)
#: namespaces = ["*"]: every namespace
EVERY = "*"


class Role(enum.IntEnum):
    """What a token may do; each role may do what the roles below it may."""

    READ = 1
    SUBMIT = 2
    ADMIN = 3

    @classmethod
    def parse(cls, value: str) -> Role:
        try:
            return cls[value.upper()]
        except KeyError:
            names = ", ".join(r.name.lower() for r in cls)
            raise ConfigError(f"role {value!r} is not one of {names}") from None


@dataclass(frozen=True)
class Grant:
    """One caller's access: its label, its role, the namespaces it reaches (None: all)."""

    label: str
    role: Role
    namespaces: frozenset[str] | None

    def sees(self, namespace: str) -> bool:
        """The caller reaches ``namespace``."""
        return self.namespaces is None or namespace in self.namespaces

    def may(self, role: Role) -> bool:
        """The caller's role is ``role`` or above."""
        return self.role >= role

    @property
    def everything(self) -> bool:
        """An admin of every namespace (the single token, an open server)."""
        return self.namespaces is None and self.role is Role.ADMIN


#: the caller of a server without tokens
ANONYMOUS = Grant("anonymous", Role.ADMIN, None)


class Tenancy:
    """The grants of a server by token (kept as digests); ``open``: no token is needed."""

    def __init__(self, grants: Mapping[str, Grant]) -> None:
        self._by_digest = {_digest(token): grant for token, grant in grants.items()}
        self.labels = tuple(sorted(g.label for g in grants.values()))

    @property
    def open(self) -> bool:
        """No token is needed: every request is :data:`ANONYMOUS`."""
        return not self._by_digest

    def identify(self, token: str) -> Grant | None:
        """The grant of ``token``, or None: not a token of this server."""
        if not token:
            return None
        return self._by_digest.get(_digest(token))

    @classmethod
    def single(cls, token: str | None) -> Tenancy:
        """The one-token server: ``token`` is the admin of every namespace (None: open)."""
        return cls({} if token is None else {token: Grant("token", Role.ADMIN, None)})


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


def read_tokens(path: str | os.PathLike[str]) -> Tenancy:
    """The tenancy in the tokens file at ``path`` (private to its owner, TOML; see the
    module's docstring); :class:`~oomguard.errors.ConfigError` naming what is wrong."""
    where = f"tokens file {str(path)!r}"
    text = read_private(path, "tokens file")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{where} is not TOML: {err}") from None
    unknown = sorted(set(data) - {"tokens"})
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)} (only [tokens.LABEL])")
    tables = data.get("tokens")
    if not isinstance(tables, dict) or not tables:
        raise ConfigError(f"{where} has no [tokens.LABEL] table")
    grants: dict[str, Grant] = {}
    for label, entry in tables.items():
        token, grant = _entry(where, label, entry)
        if token in grants:
            raise ConfigError(
                f"{where}: tokens {grants[token].label!r} and {label!r} are the same token"
            )
        grants[token] = grant
    return Tenancy(grants)


def _entry(where: str, label: str, entry: object) -> tuple[str, Grant]:
    here = f"{where}, [tokens.{label}]"
    if not LABEL.match(label):
        raise ConfigError(f"{here}: a label is 1-64 letters, digits and _ . : -")
    if not isinstance(entry, dict):
        raise ConfigError(f"{here} is not a table")
    unknown = sorted(set(entry) - {"token", "role", "namespaces"})
    if unknown:
        raise ConfigError(f"{here}: unknown key(s) {', '.join(unknown)}")
    token = entry.get("token")
    if not isinstance(token, str) or len(token.strip()) < MIN_TOKEN:
        raise ConfigError(f"{here}: token must be a string of at least {MIN_TOKEN} characters")
    role = entry.get("role")
    if not isinstance(role, str):
        raise ConfigError(f"{here}: role must be one of read, submit, admin")
    try:
        parsed = Role.parse(role)
    except ConfigError as err:
        raise ConfigError(f"{here}: {err}") from None
    return token.strip(), Grant(label, parsed, _namespaces(here, entry.get("namespaces")))


def _namespaces(here: str, value: object) -> frozenset[str] | None:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise ConfigError(f'{here}: namespaces must be a list of names (or ["*"])')
    if EVERY in value:
        if len(value) > 1:
            raise ConfigError(f'{here}: "*" (every namespace) stands alone')
        return None
    bad = [v for v in value if not NAMESPACE.match(v)]
    if bad:
        raise ConfigError(f"{here}: {bad[0][:80]!r} is not a namespace name")
    return frozenset(value)


def visible(grant: Grant, asked: str | None) -> Collection[str] | None:
    """The namespaces a listing of ``grant`` shows: ``asked`` (``?namespace=``) where it
    may see it (else nothing), else all of its own (None: every namespace)."""
    if asked is not None:
        return (asked,) if grant.sees(asked) else ()
    return grant.namespaces


__all__ = [
    "ANONYMOUS",
    "EVERY",
    "NAMESPACE",
    "Grant",
    "Role",
    "Tenancy",
    "read_tokens",
    "visible",
]
