"""Canonical JSON: the one byte encoding of events and read models.

Folds must be reproducible byte for byte (a rebuilt projection equals the live one), so
every JSON we write goes through here: keys sorted, no whitespace, UTF-8, and Decimals as
plain strings (never scientific notation, infinity spelled ``Infinity``) as Backend.AI's
``ResourceSlot.to_json`` does.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Annotated, Any

from pydantic import AfterValidator, Field, PlainSerializer

__all__ = ["PlainDecimal", "canonical_dumps", "decimal_to_plain", "loads"]


def decimal_to_plain(value: Decimal) -> str:
    """Render a Decimal without an exponent, so ``1E+3`` is written ``1000``."""
    if value.is_infinite():
        return "-Infinity" if value < 0 else "Infinity"
    if value.is_nan():
        raise ValueError("NaN is not a valid quantity")
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text or "0"


def _no_nan(value: Decimal) -> Decimal:
    if value.is_nan():
        raise ValueError("NaN is not a valid quantity")
    return value


PlainDecimal = Annotated[
    Decimal,
    Field(allow_inf_nan=True),
    AfterValidator(_no_nan),
    PlainSerializer(decimal_to_plain, return_type=str, when_used="json"),
]
"""A Decimal (Infinity allowed: "unlimited") that serialises to its plain string in JSON."""


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return decimal_to_plain(value)
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def canonical_dumps(obj: Any) -> str:
    """Serialise already-JSON-shaped data (``model_dump(mode="json")``) canonically."""
    return json.dumps(
        obj,
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
        default=_default,
    )


def loads(text: str | bytes) -> Any:
    return json.loads(text)
