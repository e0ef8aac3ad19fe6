"""Value checks: each failure is a ConfigError naming the key, the value and the valid range.

The config check (:mod:`lora_exp.validate`), the methods' ``apply`` functions and the decoding
options all use these, so one kind of value is always refused with the same words.
"""
from __future__ import annotations

from typing import Any

from lora_exp.errors import ConfigError


def check_int(key: str, value: Any, minimum: int, maximum: int | None = None, why: str = "",
              allow_none: bool = False) -> int | None:
    """``value`` as an int in [minimum, maximum] (no upper bound when ``maximum`` is None).

    Raises:
        ConfigError: not an integer (bools are refused too), or out of range; None unless
            ``allow_none``.
    """
    if value is None and allow_none:
        return None
    valid = f"an integer in [{minimum}, {maximum}]" if maximum is not None else f"an integer >= {minimum}"
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(key, value, valid, why or "not an integer")
    if value < minimum or (maximum is not None and value > maximum):
        raise ConfigError(key, value, valid, why)
    return value


def check_positive(key: str, value: Any) -> float:
    """``value`` if it is a number > 0 (bools refused)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigError(key, value, "a number > 0")
    return value


def check_choice(key: str, value: Any, choices: list) -> Any:
    """``value`` if it is one of ``choices``."""
    if value not in choices:
        raise ConfigError(key, value, sorted(choices))
    return value


def check_bool(key: str, value: Any) -> bool:
    """``value`` if it is a boolean (not 0/1, not a string)."""
    if not isinstance(value, bool):
        raise ConfigError(key, value, [True, False])
    return value
