"""YAML kept in FITS header COMMENT cards: butler's own blocks and astropy's.

Table meta and column formats (butler) and serialized mixin columns (astropy) are YAML in
the header of a file someone else may have written: it is loaded with astropy's safe
loader only after its aliases are bounded (`check_yaml`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from astropy.io import fits

if TYPE_CHECKING:
    from butler import ButlerLocation

__all__ = ["check_astropy_yaml", "check_yaml", "get_yaml_block", "put_yaml_block"]

_LINE, _MORE = "|", "+"  # first chunk of a YAML line / continuation of the line above
_END = "$"  # closes every card, so trailing spaces (which FITS strips) survive
_CHUNK = 70


def put_yaml_block(header: fits.Header, marker: str, value: Any) -> None:
    """Store ``value`` as YAML in COMMENT cards between ``--BEGIN-<marker>--`` and END.

    astropy's safe YAML dialect is used (Quantity, numpy scalars, ordered dicts; no code on
    load). Each card holds ``|`` + up to 70 characters starting a YAML line, or ``+`` and
    the continuation of the previous one, so any line length round-trips exactly.
    """
    from astropy.io.misc import yaml

    text = yaml.dump(value, sort_keys=False)  # mappings keep their order
    header.add_comment(f"--BEGIN-{marker}--")
    for line in text.splitlines():
        chunks = [line[i : i + _CHUNK] for i in range(0, len(line), _CHUNK)] or [""]
        header.add_comment(f"{_LINE}{chunks[0]}{_END}")
        for chunk in chunks[1:]:
            header.add_comment(f"{_MORE}{chunk}{_END}")
    header.add_comment(f"--END-{marker}--")


#: Nodes YAML aliases may add to a header's YAML block when expanded. Aliases are legitimate
#: (PyYAML and astropy write one for every repeated object, e.g. a unit shared by columns)
#: but 20 nested aliases expand to a billion nodes ("billion laughs"): whatever later walks
#: the table's meta (a copy, a conversion to another format, a repr) would never finish.
MAX_YAML_ALIAS_NODES = 100_000


def check_yaml(text: str, what: str, location: ButlerLocation) -> None:
    """Refuse YAML whose aliases expand past `MAX_YAML_ALIAS_NODES`, or that aliases itself.

    Composing (without constructing anything) is linear in the text; the expanded size
    is then counted once per node.
    """
    import yaml

    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except RecursionError:
        raise location.format_error(f"{what} is nested too deeply") from None
    except yaml.YAMLError as exc:
        raise location.format_error(f"{what} is not valid YAML: {exc}") from None
    if root is None:
        return
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def expanded(node: Any) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in active:
            raise location.format_error(f"{what} contains a recursive YAML alias")
        active.add(key)
        if isinstance(node, yaml.MappingNode):
            children = [item for pair in node.value for item in pair]
        elif isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        else:
            children = []
        total = 1 + sum(expanded(child) for child in children)
        active.discard(key)
        sizes[key] = total
        return total

    try:
        total = expanded(root)
    except RecursionError:
        raise location.format_error(f"{what} is nested too deeply") from None
    if total - len(sizes) > MAX_YAML_ALIAS_NODES:
        raise location.format_error(
            f"{what} uses YAML aliases that expand {len(sizes):,} nodes to {total:,} (more "
            f"than {MAX_YAML_ALIAS_NODES:,} added): refused as a 'billion laughs' document"
        )


def check_astropy_yaml(header: fits.Header, location: ButlerLocation) -> None:
    """Bound astropy's own serialized-columns YAML block before astropy's reader loads it."""
    if "COMMENT" not in header:
        return
    comments = [str(c) for c in header["COMMENT"]]
    try:
        start = comments.index("--BEGIN-ASTROPY-SERIALIZED-COLUMNS--")
        end = comments.index("--END-ASTROPY-SERIALIZED-COLUMNS--", start)
    except ValueError:
        return
    lines: list[str] = []
    continued = False
    for line in comments[start + 1 : end]:  # joined as astropy.io.fits.connect joins them
        if continued:
            lines[-1] += line[:70]
        else:
            lines.append(line[:70])
        continued = len(line) == 71
    check_yaml("\n".join(lines), "the ASTROPY-SERIALIZED-COLUMNS header block", location)


def get_yaml_block(
    header: fits.Header, marker: str, location: ButlerLocation | None = None
) -> tuple[bool, Any]:
    """Return ``(found, value)`` for a block written by `put_yaml_block`.

    With ``location``, the block's aliases are bounded first (see `check_yaml`).
    """
    if "COMMENT" not in header:
        return False, None
    comments = [str(c) for c in header["COMMENT"]]
    try:
        start = comments.index(f"--BEGIN-{marker}--")
        end = comments.index(f"--END-{marker}--", start)
    except ValueError:
        return False, None
    lines: list[str] = []
    for card in comments[start + 1 : end]:
        body = card[1:-1] if card.endswith(_END) else card[1:]
        if card.startswith(_MORE) and lines:
            lines[-1] += body
        else:
            lines.append(body)
    text = "\n".join(lines)
    if location is not None:
        check_yaml(text, f"the {marker} header block", location)
    from astropy.io.misc import yaml

    return True, yaml.load(text)
