"""Reading and writing standalone files (outside any repository) with butler's serializers.

This is what ``butler put``/``get``/``convert`` use: a path or URI is split into a storage
root and a key, the format comes from the name or the first bytes, and the same serializers
as for datasets do the work (``butler convert s3://bkt/img.fits ./img.h5``).
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from typing import Any

from ._errors import ButlerError
from ._location import ButlerLocation
from ._open import open_storage
from ._registry import Registry
from ._storage import ProgressCallback, Storage
from ._types import import_type, loaded_type, type_name
from ._urls import split_file_uri

__all__ = [
    "WHOLE_FILE_TYPES",
    "Dropped",
    "file_location",
    "fits_dropped",
    "read_file",
    "vouched_type",
    "write_file",
]

#: Per format, the python type that holds everything a file of that format can hold, where
#: the format's default ``python_type`` (what `read_file` returns when nothing else says)
#: holds less. `read_file` keeps the default (a Python caller asking for ``img.fits`` wants
#: the image); the CLI, which moves whole files and never shows the object, reads a file as
#: this type whenever the destination can write it (see ``docs/cli.rst``).
WHOLE_FILE_TYPES: dict[str, str] = {"fits": "astropy.io.fits.HDUList"}


#: Bytes read to identify a file's format: enough for a gzip stream to inflate to a
#: format's signature (64 bytes of deflate rarely inflate to 9).
IDENTIFY_BYTES = 512


def _registry(registry: Registry | None) -> Registry:
    if registry is None:
        from ._plugins import default_registry

        registry = default_registry()
    return registry


def file_location(
    uri: str,
    *,
    format: str | None = None,
    python_type: type | str | None = None,
    writing: bool = False,
    registry: Registry | None = None,
    parameters: dict[str, Any] | None = None,
    progress: ProgressCallback | None = None,
    allow_pickle: bool = False,
    max_read_bytes: int | str | None = None,
    overwrite: bool = False,
    **storage_options: Any,
) -> ButlerLocation:
    """A `ButlerLocation` for one standalone file.

    Parameters
    ----------
    uri
        Local path or URI (``s3://bucket/key.fits``).
    format
        Format name; identified from the file's first bytes (reading) or name otherwise.
    python_type
        Type to read the file as; defaults to the format's declared ``python_type``.
    writing
        Build a location to write.
    overwrite
        With ``writing``: replace an existing file (otherwise the commit refuses to).
    max_read_bytes
        Most bytes the read may allocate for what the file declares (see `Butler`).
    """
    from ._limits import parse_size

    reg = _registry(registry)
    root, key = split_file_uri(uri)
    if not key:
        from ._errors import StorageError

        raise StorageError(f"{uri!r} names a directory, not a file")
    storage: Storage = open_storage(root, reg, **storage_options)
    if format is None:
        first = b""
        if not writing:
            with storage.open(key) as f:
                first = f.read(IDENTIFY_BYTES)
        format = reg.identify_format(key, first)
    descriptor = reg.format(format)
    stored: dict[str, Any] = {}
    if not writing:
        stored = storage.metadata(key)  # butler-written files carry their type; others: {}
    if python_type is None:
        # A recorded type is used only if an installed serializer of this format vouches for
        # it: data never chooses what gets imported.
        python_type = vouched_type(stored.get("python_type"), format, reg)
    return ButlerLocation(
        locations=[key],
        storage=storage,
        format=format,
        python_type=type_name(python_type or descriptor.python_type),
        dataset_type=key,
        additional_data={},
        parameters=dict(parameters or {}),
        registry=reg,
        overwrite=overwrite,
        allow_pickle=allow_pickle,
        progress=progress,
        stored=stored,
        max_read_bytes=None if max_read_bytes is None else parse_size(max_read_bytes),
    )


def vouched_type(recorded: object, format: str, registry: Registry) -> str | None:
    """The type recorded with a file, when an installed serializer of ``format`` vouches for it.

    Butler records the concrete class it wrote (``astropy.table.table.Table``), plugins
    register the public name (``astropy.table.Table``): the recorded name is accepted when it
    is a registered one, or names a registered class (or a subclass of one) once the
    registered types of the *same top-level package* are imported. Installing the plugin
    vouches for those; nothing else is ever imported because a file says so.

    Parameters
    ----------
    recorded
        The ``python_type`` recorded in the file's metadata (anything: it is data).
    format
        The file's format.
    registry
        Where the serializers are registered.

    Returns
    -------
    str or None
        ``recorded``, or ``None`` when no installed serializer of ``format`` vouches for it.
    """
    if not isinstance(recorded, str) or not recorded:
        return None
    registered = sorted(
        {s.python_type for s in registry.serializers.values() if s.format == format}
    )
    if recorded in registered:
        return recorded
    cls = loaded_type(recorded)
    if cls is None:
        top = recorded.split(".", 1)[0]
        for name in registered:
            if name.split(".", 1)[0] == top:
                try:
                    import_type(name)
                except ButlerError:
                    continue  # its plugin's library is missing: it vouches for nothing
        cls = loaded_type(recorded)
    if cls is None:
        return None
    for name in registered:
        base = loaded_type(name)
        if base is not None and issubclass(cls, base):
            return recorded
    return None


def read_file(uri: str, **kwargs: Any) -> Any:
    """Read a standalone file with the serializer of its format (see `file_location`).

    Examples
    --------
    >>> import butler, json, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "x.json")
    >>> butler.write_file({"a": 1}, path)
    >>> butler.read_file(path)
    {'a': 1}
    """
    return file_location(uri, **kwargs).read()


def write_file(obj: Any, uri: str, *, overwrite: bool = False, **kwargs: Any) -> None:
    """Write ``obj`` to a standalone file (atomically) in the format its name implies.

    Parameters
    ----------
    obj
        The object to write.
    uri
        Local path or URI of the file.
    overwrite
        Replace the file if it exists.
    **kwargs
        As for `file_location` (``format``, ``registry``, storage options...).

    Raises
    ------
    DatasetExistsError
        If the file exists and ``overwrite`` is false.
    """
    from ._errors import DatasetExistsError

    kwargs.setdefault("python_type", type(obj))
    location = file_location(uri, writing=True, overwrite=overwrite, **kwargs)
    exists = DatasetExistsError(
        f"{location.uri!r} already exists; pass overwrite=True to replace it"
    )
    # Checked first so a big object is not serialized for nothing; the storage's
    # create-if-absent commit still refuses a file that appears meanwhile.
    if not overwrite and location.storage.exists(location.key):
        raise exists
    try:
        location.write(obj)
    except DatasetExistsError:
        raise exists from None


#: FITS keywords that only lay out the data (any writer rebuilds them) or that butler writes
#: for itself: reading the data alone loses nothing by dropping them.
_LAYOUT_KEYWORDS = re.compile(
    r"(SIMPLE|XTENSION|BITPIX|NAXIS\d*|EXTEND|PCOUNT|GCOUNT|GROUPS|BSCALE|BZERO|CHECKSUM"
    r"|DATASUM|BUTL\w*)?"
)

#: What each FITS python type reads of a file: which HDU by default, and whether the HDU's
#: header cards come with it. Types not listed (HDUList, Header, CCDData...) are not checked.
_FITS_READS = {
    "numpy.ndarray": ("image", False),
    "astropy.table.Table": ("table", True),
}


@dataclass(frozen=True)
class Dropped:
    """What reading a file as one python type leaves out of it.

    Attributes
    ----------
    kept
        The part that is read, e.g. ``"HDU 0:PRIMARY"``.
    parts
        Other parts holding data, e.g. ``"1:CAT (table, 3 rows)"``.
    cards
        Keywords of the header cards left out (one per keyword, in file order).
    ncards
        How many header cards are left out.
    """

    kept: str
    parts: tuple[str, ...] = ()
    cards: tuple[str, ...] = ()
    ncards: int = 0

    def __bool__(self) -> bool:
        return bool(self.parts or self.ncards)

    def describe(self) -> str:
        """``"header cards (OBJECT, EXPTIME: 2) and HDUs 1:CAT (table, 3 rows)"``."""
        what = []
        if self.ncards:
            shown = ", ".join(self.cards[:8]) + (", ..." if len(self.cards) > 8 else "")
            what.append(f"{self.ncards} header card(s) ({shown})")
        if self.parts:
            what.append(f"HDU(s) {', '.join(self.parts)}")
        return " and ".join(what)


def _fits_name(index: int, hdu: Any) -> str:
    return f"{index}:{hdu.name or ('PRIMARY' if index == 0 else '')}".rstrip(":")


def _fits_hdu_text(index: int, hdu: Any) -> str:
    header = hdu.header
    name = _fits_name(index, hdu)
    dims = [header.get(f"NAXIS{i}", 0) for i in range(1, header.get("NAXIS", 0) + 1)]
    if type(hdu).__name__ == "GroupsHDU":
        kind = f"random groups, {header.get('GCOUNT', 0)} groups"
    elif (
        "XTENSION" in header
        and str(header["XTENSION"]).strip() in ("BINTABLE", "TABLE")
        and (not header.get("ZIMAGE"))
    ):
        kind = f"table, {dims[1] if len(dims) > 1 else 0} rows"
    else:
        kind = "image " + "x".join(str(d) for d in reversed(dims))
    return f"{name} ({kind})"


def _fits_has_data(hdu: Any) -> bool:
    header = hdu.header
    if type(hdu).__name__ == "GroupsHDU":
        return bool(header.get("GCOUNT", 0))
    naxis = header.get("NAXIS", 0)
    return naxis > 0 and all(header.get(f"NAXIS{i}", 0) > 0 for i in range(1, naxis + 1))


def _fits_picks(hdu: Any, kind: str) -> bool:
    """Whether the reader of ``kind`` takes ``hdu`` by default (as the FITS plugin does)."""
    from astropy.io import fits

    if kind == "table":
        return isinstance(hdu, fits.BinTableHDU | fits.TableHDU) and not isinstance(
            hdu, getattr(fits, "CompImageHDU", ())
        )
    return isinstance(hdu, fits.PrimaryHDU | fits.ImageHDU) and (
        hdu.header.get("NAXIS", 0) > 0 or "BUTLSHAP" in hdu.header
    )


def fits_dropped(location: ButlerLocation, python_type: str) -> Dropped | None:
    """What reading the FITS file at ``location`` as ``python_type`` leaves out.

    Only the headers are read (astropy skips the data). The HDU kept is the ``hdu``
    parameter of the location, else the one the FITS plugin's reader picks.

    Returns
    -------
    Dropped or None
        ``None`` when the type is not one whose reads are known here, astropy is missing,
        or the file cannot be parsed (the read itself then reports why).
    """
    reads = _FITS_READS.get(type_name(python_type))
    if reads is None:
        return None
    kind, keeps_header = reads
    try:
        from astropy.io import fits

        with location.open_read() as f, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with fits.open(f, memmap=False, lazy_load_hdus=False) as hdul:
                hdus = list(hdul)
                asked = location.parameters.get("hdu")
                if asked is not None:
                    kept = hdul.index_of(tuple(asked) if isinstance(asked, list) else asked)
                else:
                    kept = next((i for i, h in enumerate(hdus) if _fits_picks(h, kind)), None)
                if kept is None:
                    return None
                parts: list[str] = []
                cards: list[str] = []
                for index, hdu in enumerate(hdus):
                    if index != kept and _fits_has_data(hdu):
                        parts.append(_fits_hdu_text(index, hdu))
                    elif index != kept or not keeps_header:
                        cards += [
                            c.keyword
                            for c in hdu.header.cards
                            if not _LAYOUT_KEYWORDS.fullmatch(c.keyword)
                        ]
                name = _fits_name(kept, hdus[kept])
    except ImportError:
        return None
    except (ButlerError, OSError, ValueError, KeyError, IndexError, TypeError):
        return None
    return Dropped(f"HDU {name}", tuple(parts), tuple(dict.fromkeys(cards)), len(cards))
