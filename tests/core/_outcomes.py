"""`outcome` and `typed_outcome`: what a call answered, as comparable data (fast path
against portable path)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from butler import ButlerError


def outcome(call: Callable[[], Any]) -> tuple[str, str]:
    """(exception class name or ``"ok"``, message or repr of the value)."""
    try:
        value = call()
    except ButlerError as exc:
        return type(exc).__name__, str(exc)
    return "ok", repr(value)


def typed_outcome(call: Callable[[], Any]) -> tuple[str, Any]:
    """`outcome` keeping the value itself and its class (a dict subclass reprs as a dict):
    ``("error", (class, message))`` or ``("value", (class, value))``."""
    try:
        value = call()
    except ButlerError as exc:
        return ("error", (type(exc), str(exc)))
    return ("value", (type(value), value))
