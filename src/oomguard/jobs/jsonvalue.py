"""JSON values: what a user's parameters, results and a failure's evidence are when they
cross a layer as JSON (a real recursive type)."""

from __future__ import annotations

from typing import TypeAlias

#: a JSON value as :func:`json.loads` returns it
JSON: TypeAlias = "bool | int | float | str | list[JSON] | dict[str, JSON] | None"
#: a JSON object
JSONObject: TypeAlias = "dict[str, JSON]"

__all__ = ["JSON", "JSONObject"]
