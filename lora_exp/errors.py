"""The one error type for bad input: every message names the key, the value and the valid choices.

``run.py`` turns it into one line on stderr and exit code 2, before any work starts.
"""
from __future__ import annotations

from typing import Any


class ConfigError(ValueError):
    """A bad configuration value: the message names the key, the value and the valid choices."""

    def __init__(self, key: str, value: Any, valid: Any, why: str = ""):
        self.key, self.value, self.valid = key, value, valid
        msg = f"{key}={value!r} is invalid"
        if why:
            msg += f": {why}"
        if valid is not None:
            msg += f"; valid: {valid}"
        super().__init__(msg)
