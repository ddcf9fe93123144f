"""`Config`: a small, subclassable, plain-data configuration mapping."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

__all__ = ["Config"]


class Config(dict[str, Any]):
    """A ``dict`` of plain data with attribute access and class-level defaults.

    Subclasses declare ``defaults`` and may override `validate`; the ``config`` format
    records the concrete subclass and reads it back as that subclass.

    Examples
    --------
    >>> class IsrConfig(Config):
    ...     defaults = {"gain": 1.0, "overscan": True}
    >>> c = IsrConfig(gain=2.0)
    >>> c.gain, c.overscan
    (2.0, True)
    """

    defaults: ClassVar[Mapping[str, Any]] = {}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(self.defaults)
        self.update(*args, **kwargs)
        self.validate()

    def validate(self) -> None:
        """Check the values; raise ``ValueError`` to reject a config (called on creation)."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"{type(self).__name__} has no field {name!r}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value

    def __repr__(self) -> str:
        return f"{type(self).__name__}({dict.__repr__(self)})"
