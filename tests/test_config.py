"""Settings: defaults, environment variables, configure(), and their order."""

from __future__ import annotations

import pytest

import pypanic
from pypanic._config import DEFAULTS, resolve


def test_defaults():
    """With nothing set, the documented defaults apply."""
    settings = resolve(pypanic.panicDbg)
    assert settings.exit_status == 1 and settings.redact is True and settings.abort is False
    assert settings.directory is None and settings.max_bytes == DEFAULTS["max_bytes"]
    assert settings.warnings == []


def test_environment_overrides_defaults_and_code_overrides_environment(monkeypatch, tmp_path):
    """configure() wins over PYPANIC_* variables, which win over the defaults."""
    monkeypatch.setenv("PYPANIC_DIR", str(tmp_path))
    monkeypatch.setenv("PYPANIC_EXIT_STATUS", "3")
    monkeypatch.setenv("PYPANIC_ABORT", "yes")
    settings = resolve(pypanic.panicDbg)
    assert (settings.directory, settings.exit_status, settings.abort) == (str(tmp_path), 3, True)
    pypanic.configure(exit_status=9, abort=False)
    settings = resolve(pypanic.panicDbg)
    assert (settings.exit_status, settings.abort) == (9, False)


def test_bad_environment_value_is_a_warning(monkeypatch):
    """A bad variable never stops a dump: it is ignored and reported."""
    monkeypatch.setenv("PYPANIC_EXIT_STATUS", "300")
    settings = resolve(pypanic.panicDbg)
    assert settings.exit_status == 1
    assert settings.warnings == ["ignored PYPANIC_EXIT_STATUS='300': exit_status must be between 0 and 255, not 300"]


@pytest.mark.parametrize(
    ("settings", "error", "message"),
    [
        ({"colour": "red"}, TypeError, "pypanic has no setting 'colour'"),
        ({"abort": "yes"}, TypeError, "abort must be True or False"),
        ({"max_bytes": -1}, ValueError, "max_bytes must be positive"),
        ({"exit_status": 256}, ValueError, "exit_status must be between 0 and 255"),
        ({"directory": 5}, TypeError, "directory must be a path or None"),
        ({"secret_words": []}, ValueError, "secret_words needs at least one word"),
    ],
)
def test_configure_refuses_bad_settings(settings, error, message):
    """configure() says which setting is wrong and why, and changes nothing."""
    with pytest.raises(error, match=message):
        pypanic.configure(**settings)
    assert pypanic.panicDbg.settings == {}
