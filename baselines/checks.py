"""Value checks shared by the baselines: each failure is a ConfigError naming key, value, range.

They run inside the ``apply`` functions, i.e. when the method is applied to the model, which is
before the first training step (and in a dry run).
"""
from __future__ import annotations

from typing import Any

from lora_exp.spec import ConfigError


def check_int(key: str, value: Any, minimum: int, maximum: int | None = None, why: str = "") -> int:
    """``value`` as an int in [minimum, maximum] (no upper bound when ``maximum`` is None).

    Raises:
        ConfigError: not an integer (bools are refused too), or out of range.
    """
    valid = f"an integer in [{minimum}, {maximum}]" if maximum is not None else f"an integer >= {minimum}"
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(key, value, valid, why or "not an integer")
    if value < minimum or (maximum is not None and value > maximum):
        raise ConfigError(key, value, valid, why)
    return value


def check_choice(key: str, value: Any, choices: list[str]) -> str:
    """``value`` if it is one of ``choices``.

    Raises:
        ConfigError: any other value.
    """
    if value not in choices:
        raise ConfigError(key, value, sorted(choices))
    return value
