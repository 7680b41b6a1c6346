"""Settings: defaults, overridden by environment variables, overridden by ``configure()``.

Settings made in code live in the shared registry, so every copy of pypanic in the
process sees them; environment variables are read when a dump is written, and a bad
value there never stops a dump (it is reported in the dump's ``dbg.warnings``).
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from ._registry import Registry

SECRET_WORDS = (
    "TOKEN",
    "SECRET",
    "PASSWORD",
    "PASSWD",
    "PASS",
    "KEY",
    "CREDENTIAL",
    "AUTH",
    "COOKIE",
    "SESSION",
    "PRIVATE",
    "DSN",
    "SIGNATURE",
    "CERT",
    "SALT",
)
"""A name containing one of these words (case-insensitively) holds a secret."""

DEFAULTS: dict[str, Any] = {
    "directory": None,
    "redact": True,
    "secret_words": SECRET_WORDS,
    "max_depth": 32,
    "max_items": 10_000,
    "max_string": 1 << 20,
    "max_bytes": 256 << 20,
    "max_seconds": 10.0,
    "locals": True,
    "exit_status": 1,
    "abort": False,
    "panic_on_keyboard_interrupt": False,
    "signal": None,
}
"""Every setting and its default; the README's configuration table describes each one."""

ENVIRONMENT = {
    "directory": "PYPANIC_DIR",
    "redact": "PYPANIC_REDACT",
    "max_bytes": "PYPANIC_MAX_BYTES",
    "max_seconds": "PYPANIC_MAX_SECONDS",
    "locals": "PYPANIC_LOCALS",
    "exit_status": "PYPANIC_EXIT_STATUS",
    "abort": "PYPANIC_ABORT",
}
"""The settings an environment variable can give, and its name."""

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class Settings:
    """The settings in force for one dump, each an attribute named as in ``DEFAULTS``."""

    def __init__(self, values: dict[str, Any], warnings: list[str]) -> None:
        self.__dict__.update(values)
        self.warnings = warnings

    directory: str | None
    redact: bool
    secret_words: tuple[str, ...]
    max_depth: int
    max_items: int
    max_string: int
    max_bytes: int
    max_seconds: float
    locals: bool
    exit_status: int
    abort: bool
    panic_on_keyboard_interrupt: bool
    signal: int | None


def _check(name: str, value: Any) -> Any:
    """``value`` as the setting ``name`` takes it; TypeError or ValueError when it cannot be."""
    default = DEFAULTS[name]
    if name == "directory":
        if value is not None and not isinstance(value, (str, os.PathLike)):
            raise TypeError(f"directory must be a path or None, not {type(value).__name__}")
        return None if value is None else os.fspath(value)
    if name == "signal":
        from ._listener import parse

        return None if value is None else parse(value)
    if name == "secret_words":
        words = tuple(str(w).upper() for w in value)
        if not words:
            raise ValueError("secret_words needs at least one word; use redact=False instead")
        return words
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise TypeError(f"{name} must be True or False, not {value!r}")
        return value
    if isinstance(default, (int, float)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"{name} must be a number, not {value!r}")
        value = type(default)(value)
        if name == "exit_status" and not 0 <= value <= 255:
            raise ValueError(f"exit_status must be between 0 and 255, not {value}")
        if name != "exit_status" and value <= 0:
            raise ValueError(f"{name} must be positive, not {value}")
        return value
    raise AssertionError(name)


def _from_environment(name: str, text: str) -> Any:
    default = DEFAULTS[name]
    if name == "directory":
        return text or None
    if isinstance(default, bool):
        lowered = text.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise ValueError(f"{text!r} is not a yes/no value (use 1 or 0)")
    return _check(name, float(text) if isinstance(default, float) else int(text))


def configure(registry: Registry, **settings: Any) -> None:
    """Set settings in code for the whole process; unknown names and bad values raise."""
    checked = {}
    for name, value in settings.items():
        if name not in DEFAULTS:
            known = ", ".join(sorted(DEFAULTS))
            raise TypeError(f"pypanic has no setting {name!r}; the settings are: {known}")
        checked[name] = _check(name, value)
    registry.settings.update(checked)


def resolve(registry: Registry) -> Settings:
    """The settings in force now; never raises."""
    values = dict(DEFAULTS)
    warnings = []
    for name, variable in ENVIRONMENT.items():
        text = os.environ.get(variable)
        if text is None:
            continue
        try:
            values[name] = _from_environment(name, text)
        except (TypeError, ValueError) as e:
            warnings.append(f"ignored {variable}={text!r}: {e}")
    values.update(registry.settings)
    return Settings(values, warnings + registry.notes)
