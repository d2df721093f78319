"""What a declared command accepts: typed fields, and templates that stay argument lists.

A command the operator declares for a server (``serve --commands``, docs/ARCHITECTURE.md,
"Command tasks") fills each ``{field}`` of its argument template from a submission. Each
field has a type (:class:`Field`): ``str`` (the default), ``int``, ``float``, ``enum``
(one of ``values``) or ``regex`` (the whole value matches ``pattern``). A value that
starts with ``-`` could be read as an option (``grep -r``): it is refused unless the
field allows ``options``. A template where a field could choose the program is refused
when it is read (:func:`check_template`): a field in ``argv[0]``, or as (or right after)
an interpreter's ``-c``/``-e`` (``sh -c {script}``, ``python -c {code}``).
"""

from __future__ import annotations

import itertools
import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from oomguard.errors import ConfigError, PayloadError
from oomguard.jobs.jsonvalue import JSON, JSONObject

FIELD_TYPES = ("str", "int", "float", "enum", "regex")
#: an interpreter's "run this text" flag: -c, -e, a short cluster ending in one (-lc),
#: --command, --eval
_CODE_FLAG = re.compile(r"-[A-Za-z]{0,2}[ce]|--command|--eval")
#: the same flag with its text in the same argument (-c{code}, --eval={code})
_CODE_WITH_TEXT = re.compile(r"^(-[A-Za-z]{0,2}[ce](?=[^A-Za-z])|--command=|--eval=)")
#: longest text a field's value may have
MAX_VALUE = 4096


@dataclass(frozen=True)
class Field:
    """What one field of a declared command accepts."""

    type: str = "str"
    #: ``enum``: the values allowed
    values: tuple[str, ...] = ()
    #: ``regex``: what the whole value must match
    pattern: str | None = None
    #: a value may start with ``-`` (be an option)
    options: bool = False

    def __post_init__(self) -> None:
        if self.type not in FIELD_TYPES:
            raise ConfigError(f"type {self.type!r} is not one of {', '.join(FIELD_TYPES)}")
        if self.type == "enum" and not self.values:
            raise ConfigError("an enum field needs values = [...]")
        if self.type == "regex":
            if not self.pattern:
                raise ConfigError("a regex field needs pattern = '...'")
            try:
                re.compile(self.pattern)
            except re.error as err:
                raise ConfigError(f"pattern {self.pattern!r} is not a regex: {err}") from None

    @classmethod
    def from_table(cls, data: object) -> Field:
        """A field from its table (``{type = "int"}``); ConfigError saying what is wrong."""
        if not isinstance(data, dict):
            raise ConfigError(f'expected a table such as {{type = "int"}}, not {data!r}')
        unknown = sorted(set(data) - {"type", "values", "pattern", "options"})
        if unknown:
            raise ConfigError(f"unknown key(s) {', '.join(unknown)}")
        values = data.get("values", ())
        if not isinstance(values, (list, tuple)) or not all(isinstance(v, str) for v in values):
            raise ConfigError("values is a list of strings")
        options = data.get("options", False)
        if not isinstance(options, bool):
            raise ConfigError("options is true or false")
        pattern = data.get("pattern")
        if pattern is not None and not isinstance(pattern, str):
            raise ConfigError("pattern is a string")
        return cls(str(data.get("type", "str")), tuple(values), pattern, options)

    def to_json(self) -> JSONObject:
        """The field as the reference keeps it (defaults left out)."""
        out: JSONObject = {"type": self.type}
        if self.values:
            out["values"] = list[JSON](self.values)
        if self.pattern is not None:
            out["pattern"] = self.pattern
        if self.options:
            out["options"] = True
        return out

    def text(self, name: str, value: object) -> str:
        """The argument text of ``value`` for this field; PayloadError when it does not fit."""
        text = _typed(name, self, value)
        if len(text) > MAX_VALUE:
            raise PayloadError(f"field {name}: value longer than {MAX_VALUE} characters")
        if "\0" in text:
            raise PayloadError(f"field {name}: value contains a NUL character")
        if text.startswith("-") and not self.options:
            raise PayloadError(
                f"field {name}: value {text[:80]!r} starts with '-' and could be read as an "
                "option; this command does not allow options there"
            )
        return text


def _typed(name: str, field: Field, value: object) -> str:
    if field.type == "int":
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise PayloadError(f"field {name}: expected an integer, not {value!r}")
        try:
            return str(int(value))
        except ValueError:
            raise PayloadError(f"field {name}: expected an integer, not {value!r}") from None
    if field.type == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise PayloadError(f"field {name}: expected a number, not {value!r}")
        try:
            number = float(value)
        except ValueError:
            raise PayloadError(f"field {name}: expected a number, not {value!r}") from None
        if not math.isfinite(number):
            raise PayloadError(f"field {name}: expected a finite number, not {value!r}")
        return repr(number) if isinstance(value, float) else str(value).strip()
    text = value if isinstance(value, str) else json.dumps(value)
    if field.type == "enum" and text not in field.values:
        raise PayloadError(f"field {name}: {text[:80]!r} is not one of {', '.join(field.values)}")
    if field.type == "regex" and (
        field.pattern is None or re.fullmatch(field.pattern, text) is None
    ):
        raise PayloadError(f"field {name}: {text[:80]!r} does not match {field.pattern!r}")
    return text


def check_template(argv: Sequence[str], fields_of: Callable[[str], list[str]]) -> None:
    """Refuse a declared template where a field could choose the program: a field in
    ``argv[0]``, or in an interpreter's ``-c``/``-e`` argument (ConfigError)."""
    if fields_of(argv[0]):
        raise ConfigError(
            f"the program {argv[0]!r} may not be a {{field}}: declare each program by name"
        )
    for before, arg in itertools.pairwise(argv):
        if not fields_of(arg):
            continue
        if _CODE_FLAG.fullmatch(before) or _CODE_WITH_TEXT.match(arg):
            shown = f"{before} {arg}" if _CODE_FLAG.fullmatch(before) else arg
            raise ConfigError(
                f"{shown!r}: a {{field}} may not be code an interpreter runs "
                "(declare a script and pass the value as its argument)"
            )


__all__ = ["FIELD_TYPES", "MAX_VALUE", "Field", "check_template"]
