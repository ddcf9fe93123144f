"""YAML as butler reads it from repositories: safe tags only, and no anchors or aliases.

``yaml.safe_load`` constructs no objects, but it still expands aliases: a 2 KB document
can name a billion-element list ("billion laughs") and hang whoever reads it. Everything
butler reads from a repository (the policy, ``config`` datasets) goes through `load`.
"""

from __future__ import annotations

from typing import IO, Any

from ._errors import FormatError

__all__ = ["dump", "load"]


def _loader_class() -> type:
    import yaml

    class NoAliasSafeLoader(yaml.SafeLoader):
        """`yaml.SafeLoader` that refuses anchors and aliases before building anything."""

        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.AliasEvent):
                event = self.peek_event()
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"YAML aliases are not allowed (*{event.anchor})",
                    event.start_mark,
                )
            event = self.peek_event()
            anchor = getattr(event, "anchor", None)
            if anchor is not None:
                raise yaml.constructor.ConstructorError(
                    None, None, f"YAML anchors are not allowed (&{anchor})", event.start_mark
                )
            return super().compose_node(parent, index)

    return NoAliasSafeLoader


_LOADER: type | None = None


def load(stream: IO[bytes] | IO[str] | str | bytes, *, what: str) -> Any:
    """Parse one YAML document read from a repository.

    Raises
    ------
    FormatError
        Invalid YAML, a tag that would construct an object, or any anchor/alias (naming
        ``what`` was being read).
    """
    import yaml

    global _LOADER
    if _LOADER is None:
        _LOADER = _loader_class()
    try:
        return yaml.load(stream, Loader=_LOADER)
    except yaml.YAMLError as exc:
        raise FormatError(f"{what} is not valid butler YAML: {exc}") from None


def dump(data: Any) -> str:
    """Serialize plain data as YAML that `load` accepts (never emits anchors)."""
    import yaml

    class _NoAnchorDumper(yaml.SafeDumper):
        def ignore_aliases(self, data: Any) -> bool:
            return True

    return yaml.dump(data, Dumper=_NoAnchorDumper, sort_keys=False, allow_unicode=True)
