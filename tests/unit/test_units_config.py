from __future__ import annotations

from pathlib import Path

import pytest

from oomguard.config import load_config
from oomguard.errors import ConfigError, InvalidSizeError
from oomguard.units import format_size, parse_size


@pytest.mark.parametrize(
    "text,expected",
    [
        ("2GB", 2_000_000_000),
        ("1.5GiB", 1536 * 1024**2),
        ("512M", 512 * 1024**2),
        ("512MiB", 512 * 1024**2),
        ("2Gi", 2 * 1024**3),
        ("0", 0),
        ("1024", 1024),
        ("64 KiB", 65536),
        (" 1kb ", 1000),
    ],
)
def test_sizes(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["-1", "lots", "", "1.5.5G", "12 parsecs", "-2GiB"])
def test_bad_sizes_are_rejected_with_a_message(text: str) -> None:
    with pytest.raises(InvalidSizeError) as err:
        parse_size(text)
    assert repr(text) in str(err.value) or "negative" in str(err.value)


def test_format_size() -> None:
    assert format_size(1536 * 1024**2) == "1.5GiB"
    assert format_size(512) == "512B"
    assert format_size(None) == "-"


def test_config_precedence_and_unknown_keys(tmp_path: Path) -> None:
    cfg = tmp_path / "oomguard.toml"
    cfg.write_text('workers = 3\nworker_memory = "1GiB"\n')
    config = load_config(cfg, env={"OOMGUARD_WORKERS": "5"}, batch_size=7)
    assert config.workers == 5 and config.worker_memory == 1024**3 and config.batch_size == 7
    cfg.write_text("wrokers = 3\n")
    with pytest.raises(ConfigError, match="wrokers"):
        load_config(cfg, env={})


def test_config_rejects_bad_values() -> None:
    with pytest.raises(ConfigError):
        load_config(env={}, isolation="maybe")
    with pytest.raises(ConfigError):
        load_config(env={}, workers=0)


def test_errors_survive_pickling() -> None:
    import pickle

    from oomguard.errors import IsolationError

    err = IsolationError("no cgroup", cgroup="/x", limit_bytes=5)
    copy = pickle.loads(pickle.dumps(err))
    # The error's data are its attributes too (set from its keyword arguments).
    assert type(copy) is IsolationError and copy.cgroup == "/x"  # type: ignore[attr-defined]
    assert str(copy) == "no cgroup"
