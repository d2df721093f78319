"""Tokens files, grants and the dashboard's sessions and login back-off (with a clock)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from oomguard.api.tenancy import ANONYMOUS, Grant, Role, Tenancy, read_tokens, visible
from oomguard.errors import ConfigError
from oomguard.ui.session import LoginThrottle, Sessions


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "tokens.toml"
    path.write_text(text)
    path.chmod(0o600)
    return path


def test_a_tokens_file_maps_tokens_to_grants(tmp_path: Path) -> None:
    tenancy = read_tokens(
        _write(
            tmp_path,
            '[tokens.ci]\ntoken = "abcdefghijklmnop1"\nrole = "submit"\n'
            'namespaces = ["team-a", "team-b"]\n'
            '[tokens.ops]\ntoken = "abcdefghijklmnop2"\nrole = "admin"\nnamespaces = ["*"]\n',
        )
    )
    ci = tenancy.identify("abcdefghijklmnop1")
    assert ci == Grant("ci", Role.SUBMIT, frozenset({"team-a", "team-b"}))
    assert ci.sees("team-a") and not ci.sees("team-c")
    assert ci.may(Role.READ) and ci.may(Role.SUBMIT) and not ci.may(Role.ADMIN)
    ops = tenancy.identify("abcdefghijklmnop2")
    assert ops is not None and ops.everything
    assert tenancy.identify("abcdefghijklmnop3") is None
    assert tenancy.identify("") is None
    assert not tenancy.open and Tenancy.single(None).open
    assert Tenancy.single("x" * 16).identify("x" * 16) == Grant("token", Role.ADMIN, None)
    assert visible(ci, "team-c") == () and visible(ci, "team-a") == ("team-a",)
    assert visible(ANONYMOUS, None) is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not toml [", "is not TOML"),
        ("[other]\n", "unknown key(s) other"),
        ("[tokens]\n", "has no [tokens.LABEL]"),
        ('[tokens.a]\ntoken = "short"\nrole = "read"\nnamespaces = ["x"]\n', "at least 16"),
        ('[tokens.a]\ntoken = "abcdefghijklmnopq"\nrole = "root"\nnamespaces = ["x"]\n', "root"),
        ('[tokens.a]\ntoken = "abcdefghijklmnopq"\nrole = "read"\nnamespaces = []\n', "list"),
        (
            '[tokens.a]\ntoken = "abcdefghijklmnopq"\nrole = "read"\nnamespaces = ["*", "x"]\n',
            "stands alone",
        ),
        (
            '[tokens.a]\ntoken = "abcdefghijklmnopq"\nrole = "read"\nnamespaces = ["a b"]\n',
            "not a namespace",
        ),
        (
            '[tokens.a]\ntoken = "abcdefghijklmnopq"\nrole = "read"\nnamespaces = ["x"]\n'
            '[tokens.b]\ntoken = "abcdefghijklmnopq"\nrole = "admin"\nnamespaces = ["*"]\n',
            "the same token",
        ),
        (
            '[tokens.a]\ntoken = "abcdefghijklmnopq"\nrole = "read"\nnamespaces = ["x"]\nx = 1\n',
            "unknown key(s) x",
        ),
    ],
)
def test_a_bad_tokens_file_is_refused_with_its_reason(
    tmp_path: Path, text: str, message: str
) -> None:
    with pytest.raises(ConfigError, match="tokens file") as err:
        read_tokens(_write(tmp_path, text))
    assert message in str(err.value)
    assert "abcdefghijklmnopq" not in str(err.value)  # a token is never in a message


def test_a_tokens_file_others_may_read_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, "")
    path.chmod(0o640)
    with pytest.raises(ConfigError, match="open to its group or others"):
        read_tokens(path)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_sessions_expire_and_end() -> None:
    clock = Clock()
    sessions = Sessions(60, clock=clock, most=2)
    grant = Grant("ci", Role.READ, frozenset({"a"}))
    first = sessions.start(grant)
    assert sessions.grant(first) == grant and len(first) >= 40
    clock.now += 59
    assert sessions.grant(first) == grant
    clock.now += 1
    assert sessions.grant(first) is None
    second = sessions.start(grant)
    assert sessions.end(second) and sessions.grant(second) is None and not sessions.end(second)
    kept = [sessions.start(grant) for _ in range(3)]
    assert sessions.grant(kept[0]) is None  # the oldest goes beyond ``most``
    assert sessions.grant(kept[2]) == grant
    with pytest.raises(ConfigError):
        Sessions(0)


def test_failed_logins_wait_twice_as_long_each_time() -> None:
    clock = Clock()
    throttle = LoginThrottle(free=2, most_wait=5, clock=clock)
    assert [throttle.failed("c") for _ in range(2)] == [0.0, 0.0]
    assert throttle.wait("c") == 0.0
    assert throttle.failed("c") == 1.0 and throttle.wait("c") == 1.0
    clock.now += 1
    assert throttle.wait("c") == 0.0 and throttle.wait("other") == 0.0
    assert [throttle.failed("c") for _ in range(4)] == [2.0, 4.0, 5.0, 5.0]
    throttle.succeeded("c")
    assert throttle.wait("c") == 0.0 and throttle.failed("c") == 0.0


def test_a_tokens_file_of_another_user_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, '[tokens.a]\ntoken = "abcdefghijklmnopq"\nrole = "read"\n')
    try:
        os.chown(path, 65534, 65534)
    except PermissionError:
        pytest.skip("needs root (CAP_CHOWN) to give the file to another user")
    with pytest.raises(ConfigError, match="belongs to another user"):
        read_tokens(path)
