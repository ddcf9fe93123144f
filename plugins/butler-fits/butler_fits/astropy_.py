"""Shared astropy plumbing: opening stored FITS files, choosing HDUs, checks, writing.

Every serializer module goes through these helpers, so that signature checks, truncation
checks, checksum verification and atomic writes behave the same for every python type.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import IO, TYPE_CHECKING, Any

from astropy.io import fits

from butler import FormatError

from ._checks import check_signature, hdu_key

if TYPE_CHECKING:
    from butler import ButlerLocation

__all__ = [
    "KW_TYPE",
    "FitsSource",
    "hdu_key",
    "open_source",
    "record_type",
    "recorded_type",
    "select_hdu",
    "verify_hdus",
    "write_hdulist",
]

#: Header keyword recording the concrete python type that was written.
KW_TYPE = "BUTLTYPE"
#: Keywords butler adds for its own bookkeeping (removed from headers handed back).
BUTLER_KEYWORDS = ("BUTLTYPE", "BUTLDTYP", "BUTLSHAP", "BUTLCOLS")


class FitsSource:
    """An open FITS file plus what the checks need: its size and where it came from.

    Parameters
    ----------
    hdul
        The opened `astropy.io.fits.HDUList` (lazily loaded).
    size
        Size of the stored file in bytes (for the truncation check).
    location
        The dataset, named in every error.
    compressed
        True for gzip/bzip2 files, whose HDU offsets are not file offsets.
    """

    def __init__(
        self,
        hdul: fits.HDUList,
        size: int,
        location: ButlerLocation,
        compressed: bool,
        file: Any,
    ) -> None:
        self.hdul = hdul
        self.size = size
        self.location = location
        self.compressed = compressed
        #: What astropy opened (a local path or a seekable file object), for readers such
        #: as astropy's CCDData reader that open the file themselves.
        self.file = file

    def check_all(self, checksum: bool = False) -> list[Any]:
        """Load every header; check every HDU is complete (and its checksums). Returns them."""
        hdus = list(self.hdul)
        for hdu in hdus:
            self.check_complete(hdu)
        self.check_trailing()
        if checksum:
            verify_hdus(hdus, self.location)
        return hdus

    def hdu(self, default: Callable[[fits.HDUList], Any] | None = None) -> Any:
        """The HDU named by ``hdu`` (parameters or additional data), else ``default(hdul)``."""
        try:
            return select_hdu(self.hdul, self.location, default)
        except FormatError:
            self.check_trailing()  # a truncated header hides the HDUs after it
            raise

    def check_trailing(self) -> None:
        """Raise `FormatError` if bytes follow the last readable HDU.

        astropy stops (with a warning) at a header it cannot parse, so a file truncated
        inside a header looks like a shorter, valid file; the leftover bytes give it away.
        """
        if self.compressed:
            return
        hdus = list(self.hdul)
        info = getattr(hdus[-1], "_bintable", hdus[-1]).fileinfo() if hdus else None
        if info is None:
            return
        end = int(info["datLoc"]) + int(info["datSpan"])
        if end < self.size:
            raise self.location.format_error(
                f"is truncated or corrupt: {self.size - end} bytes after HDU {len(hdus) - 1} "
                f"are not a valid HDU (no END card)"
            )

    def check_complete(self, hdu: Any) -> None:
        """Raise `FormatError` if the file is shorter than ``hdu``'s header says it is."""
        if self.compressed:
            return  # offsets are in the decompressed stream; gzip itself detects truncation
        info = hdu.fileinfo()
        if info is None:
            return
        span = getattr(hdu, "_bintable", hdu).fileinfo() or info
        end = int(span["datLoc"]) + int(span["datSpan"])
        if end > self.size:
            raise self.location.format_error(
                f"is truncated: HDU {_hdu_label(hdu)} needs {end} bytes but the file has "
                f"only {self.size}"
            )


def _hdu_label(hdu: Any) -> str:
    name = getattr(hdu, "name", "")
    return repr(name) if name and name != "PRIMARY" else "PRIMARY"


def select_hdu(
    hdul: fits.HDUList,
    location: ButlerLocation,
    default: Callable[[fits.HDUList], Any] | None = None,
) -> Any:
    """Return the HDU named by `hdu_key`, or the one ``default`` picks (else the primary).

    Raises
    ------
    FormatError
        Naming the dataset, the HDU asked for and the HDUs the file has.
    """
    key = hdu_key(location)
    if key is None:
        if default is not None:
            return default(hdul)
        key = 0
    try:
        return hdul[key]
    except (KeyError, IndexError):
        names = [f"{i}:{h.name or 'PRIMARY'}" for i, h in enumerate(hdul)]
        raise location.format_error(f"has no HDU {key!r}; its HDUs are {names}") from None


def first_hdu(
    hdul: fits.HDUList, accept: Callable[[Any], bool], what: str, location: ButlerLocation
) -> Any:
    """The first HDU (primary first) that ``accept`` takes; headers are read one by one."""
    for hdu in hdul:
        if accept(hdu):
            return hdu
    names = [f"{i}:{type(h).__name__}:{h.name or 'PRIMARY'}" for i, h in enumerate(hdul)]
    raise location.format_error(f"has no {what} HDU; its HDUs are {names}")


def verify_hdus(hdus: Iterable[Any], location: ButlerLocation) -> None:
    """Check CHECKSUM and DATASUM of ``hdus`` where present.

    Raises
    ------
    FormatError
        Naming the HDU whose checksum does not match (the file was altered or corrupted).
    """
    for hdu in hdus:
        raw = getattr(hdu, "_bintable", hdu)  # a compressed image's sums live on its table
        header = raw.header
        if "DATASUM" in header and raw.verify_datasum() == 0:
            raise location.format_error(
                f"DATASUM of HDU {_hdu_label(hdu)} does not match its data: the file is corrupt"
            )
        if "CHECKSUM" in header and raw.verify_checksum() == 0:
            raise location.format_error(
                f"CHECKSUM of HDU {_hdu_label(hdu)} does not match: the file is corrupt"
            )


@contextlib.contextmanager
def open_source(
    location: ButlerLocation, *, path: bool = False, memmap: bool = False
) -> Iterator[FitsSource]:
    """Open the stored file with astropy, lazily (headers are read as HDUs are touched).

    Parameters
    ----------
    path
        Open through `ButlerLocation.local_path` (posix: the real file, no copy) instead of
        a file object from `ButlerLocation.open_read`.
    memmap
        Memory-map the data (only with ``path``): sections and columns then touch only
        the pages they need.
    """
    if path:
        with location.local_path() as local:
            with open(local, "rb") as f:
                head = f.read(80)
                size = f.seek(0, 2)
            check_signature(head, location)
            with fits.open(local, mode="readonly", memmap=memmap, lazy_load_hdus=True) as hdul:
                yield FitsSource(hdul, size, location, not head.startswith(b"SIMPLE"), local)
        return
    with location.open_read() as f:
        yield from _open_fileobj(f, location)


def _open_fileobj(f: IO[bytes], location: ButlerLocation) -> Iterator[FitsSource]:
    head = f.read(80)
    check_signature(head, location)
    size = f.seek(0, 2)
    f.seek(0)
    compressed = not head.startswith(b"SIMPLE")
    if compressed:  # astropy only sniffs compression on paths: decompress as we read
        stream: Any = (
            gzip.GzipFile(fileobj=f, mode="rb")
            if head.startswith(b"\x1f\x8b")
            else bz2.BZ2File(f, mode="rb")
        )
    else:
        stream = f
    with fits.open(stream, mode="readonly", memmap=False, lazy_load_hdus=True) as hdul:
        yield FitsSource(hdul, size, location, compressed, stream)


@contextlib.contextmanager
def open_fileobj(f: IO[bytes], location: ButlerLocation) -> Iterator[FitsSource]:
    """Open an already opened, seekable binary file (e.g. an fsspec file on S3)."""
    yield from _open_fileobj(f, location)


class _Stream:
    """Write-only view of the storage's file, so astropy streams through ``write``.

    astropy treats anything with a ``raw`` attribute as a real file and asks for its mode;
    hiding it keeps astropy in its sequential "ostream" mode, which never seeks.
    """

    closed = False

    def __init__(self, f: Any) -> None:
        self._f = f

    def write(self, data: Any) -> int:
        return self._f.write(data)

    def flush(self) -> None:
        self._f.flush()

    def tell(self) -> int:
        return self._f.tell()


def write_hdulist(hdul: fits.HDUList, location: ButlerLocation, *, checksum: bool = False) -> None:
    """Write ``hdul`` atomically through `ButlerLocation.open_write` (streamed, no temp file).

    A key ending in ``.gz`` is gzip-compressed on the fly. ``checksum`` adds CHECKSUM and
    DATASUM keywords to every HDU. Headers are verified first (``output_verify="exception"``).
    """
    with location.open_write() as f:
        if location.key.endswith(".gz"):
            with gzip.GzipFile(fileobj=f, mode="wb", compresslevel=6) as gz:
                hdul.writeto(_Stream(gz), checksum=checksum, output_verify="exception")
        else:
            hdul.writeto(_Stream(f), checksum=checksum, output_verify="exception")


def record_type(header: fits.Header, obj: Any) -> None:
    """Record ``obj``'s concrete class in ``header`` (keyword ``BUTLTYPE``)."""
    cls = type(obj)
    name = f"{cls.__module__}.{cls.__qualname__}"
    # A comment on a long (CONTINUE) string would be truncated with a warning.
    header[KW_TYPE] = (name, "python type written by butler") if len(name) < 36 else name


def recorded_type(header: Mapping[str, Any] | fits.Header) -> str | None:
    """The python type recorded by `record_type`, if any."""
    value = header.get(KW_TYPE)
    return str(value) if value else None


#: Tile compressions astropy writes (`~astropy.io.fits.CompImageHDU`).
COMPRESSIONS = ("RICE_1", "GZIP_1", "GZIP_2", "HCOMPRESS_1", "PLIO_1", "NOCOMPRESS")

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

    text = yaml.dump(value)
    header.add_comment(f"--BEGIN-{marker}--")
    for line in text.splitlines():
        chunks = [line[i : i + _CHUNK] for i in range(0, len(line), _CHUNK)] or [""]
        header.add_comment(f"{_LINE}{chunks[0]}{_END}")
        for chunk in chunks[1:]:
            header.add_comment(f"{_MORE}{chunk}{_END}")
    header.add_comment(f"--END-{marker}--")


def get_yaml_block(header: fits.Header, marker: str) -> tuple[bool, Any]:
    """Return ``(found, value)`` for a block written by `put_yaml_block`."""
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
    from astropy.io.misc import yaml

    return True, yaml.load("\n".join(lines))


def strip_butler_keywords(header: fits.Header) -> fits.Header:
    """Remove butler's bookkeeping keywords (in place) and return the header."""
    for keyword in BUTLER_KEYWORDS:
        header.remove(keyword, ignore_missing=True, remove_all=True)
    return header


def check_args(
    location: ButlerLocation, checksum: Any, compress: Any, compress_args: Any, *, images: bool
) -> None:
    """Validate serializer arguments shared by every FITS serializer."""
    if not isinstance(checksum, bool):
        raise location.format_error(f"serializer argument checksum={checksum!r} is not a bool")
    if compress is not None and compress not in COMPRESSIONS:
        raise location.format_error(
            f"serializer argument compress={compress!r} is not one of {list(COMPRESSIONS)}"
        )
    if compress is not None and not images:
        raise location.format_error(
            f"serializer argument compress={compress!r} applies to images only "
            f"(numpy arrays), not to {location.python_type!r}"
        )
    if compress_args is not None and not isinstance(compress_args, Mapping):
        raise location.format_error(
            f"serializer argument compress_args={compress_args!r} is not a mapping"
        )
