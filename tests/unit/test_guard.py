"""The names a server answers to (Host check) and how Host headers are read."""

from __future__ import annotations

from oomguard.api.guard import host_name, server_names


def test_host_name() -> None:
    assert host_name("127.0.0.1:8765") == "127.0.0.1"
    assert host_name("LocalHost") == "localhost"
    assert host_name("[::1]:8765") == "::1"
    assert host_name("::1") == "::1"
    assert host_name("") == ""


def test_server_names() -> None:
    assert server_names("127.0.0.1") == ("127.0.0.1", "localhost")
    assert set(server_names("::1") or ()) == {"::1", "localhost"}
    assert set(server_names("localhost") or ()) == {"localhost", "127.0.0.1", "::1"}
    assert server_names("10.1.2.3", ["box.example"]) == ("10.1.2.3", "box.example")
    # A wildcard address: any Host (such a server needs a bearer token), unless named.
    assert server_names("0.0.0.0") is None
    assert server_names("::") is None
    assert server_names("0.0.0.0", ["box.example"]) == ("box.example",)
