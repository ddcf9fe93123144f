"""FITS files as astropy opens and writes them: the layer every FITS serializer shares.

Opening a stored file (`FitsSource`, `open_source`), choosing HDUs (`select_hdu`), checking
them (`verify_hdus`), recording the written type (`record_type`) and writing an HDU list
atomically (`write_hdulist`).

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

from ._checks import check_signature, hdu_key, os_error_in_chain
from ._chunked import chunked
from ._sizes import column_bytes, cutout_bytes, declared_bytes, hdu_label
from ._yaml_blocks import check_astropy_yaml, get_yaml_block, put_yaml_block

if TYPE_CHECKING:
    from butler import ButlerLocation

__all__ = [
    "KW_TYPE",
    "FitsSource",
    "check_astropy_yaml",
    "data_end",
    "get_yaml_block",
    "hdu_key",
    "hdu_names",
    "is_nonstandard",
    "open_source",
    "put_yaml_block",
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
        end = data_end(hdus[-1]) if hdus else None
        if end is None:
            return
        if end < self.size:
            raise self.location.format_error(
                f"is truncated or corrupt: {self.size - end} bytes after HDU {len(hdus) - 1} "
                f"are not a valid HDU (no END card)"
            )

    def check_complete(self, hdu: Any) -> None:
        """Raise `FormatError` if the file is shorter than ``hdu``'s header says it is."""
        if self.compressed:
            return  # offsets are in the decompressed stream; gzip itself detects truncation
        end = data_end(hdu)
        if end is None:
            return
        if end > self.size:
            raise self.location.format_error(
                f"is truncated: HDU {_hdu_label(hdu)} needs {end} bytes but the file has "
                f"only {self.size}"
            )

    def check_size(
        self,
        hdus: Iterable[Any],
        *,
        section: tuple[Any, ...] | None = None,
        columns: Iterable[str] | None = None,
    ) -> None:
        """Refuse to read ``hdus``' data if their headers declare more than the read limit.

        Called after the headers are read (on a ``.fits.gz``, from the decompressed
        stream) and before any data is: a tiny file declaring a huge image fails with a
        `FormatError` naming the declared size and how to raise the limit.

        Parameters
        ----------
        section
            Only this cutout of the (single) image HDU is read.
        columns
            Only these columns of the (single, memory-mapped) table HDU are copied.
        """
        total, parts = 0, []
        for hdu in hdus:
            if section is not None:
                nbytes, what = cutout_bytes(hdu, section, self.location)
            elif columns is not None:
                nbytes, what = column_bytes(hdu, columns, self.location)
            else:
                nbytes, what = declared_bytes(hdu, self.location)
            total += nbytes
            parts.append(what)
        if parts:
            self.location.check_read_size(total, what=" + ".join(parts))


_hdu_label = hdu_label


def data_end(hdu: Any) -> int | None:
    """File offset just past ``hdu``'s data (its padding included), or None if unknown.

    A tile-compressed image ends where its binary table does. A non-standard HDU
    (``SIMPLE = F``, which astropy opens as ``_NonstandardHDU``) has no ``fileinfo``: its
    "data" is whatever follows its header, up to the end of the file, unpadded (None).
    """
    raw = getattr(hdu, "_bintable", None) or hdu
    fileinfo = getattr(raw, "fileinfo", None)
    if fileinfo is None:  # SIMPLE = F: its raw bytes may end anywhere, unpadded
        return None
    info = fileinfo()
    if info is None:
        return None
    return int(info["datLoc"]) + int(info["datSpan"])


def is_nonstandard(hdu: Any) -> bool:
    """True for the HDU astropy opens a ``SIMPLE = F`` file as (readable, not writable)."""
    return type(hdu).__name__ == "_NonstandardHDU"


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


def hdu_names(hdul: fits.HDUList) -> list[str]:
    """``["0:PrimaryHDU:PRIMARY", "1:BinTableHDU:EVENTS"]``, for messages."""
    names = []
    for i, hdu in enumerate(hdul):
        name = getattr(hdu, "name", "") or ("PRIMARY" if i == 0 else "")
        names.append(f"{i}:{type(hdu).__name__.lstrip('_')}:{name}")
    return names


#: What to ask for instead, by what a reader looked for and did not find.
_INSTEAD = {
    "image": "read it as astropy.io.fits.HDUList (every HDU with its header) or as "
    "astropy.table.Table (its first table), or pick an HDU with parameters={'hdu': ...}",
    "table": "read it as astropy.io.fits.HDUList or numpy.ndarray, or pick an HDU with "
    "parameters={'hdu': ...}",
}


def first_hdu(
    hdul: fits.HDUList, accept: Callable[[Any], bool], what: str, location: ButlerLocation
) -> Any:
    """The first HDU (primary first) that ``accept`` takes; headers are read one by one."""
    for hdu in hdul:
        if accept(hdu):
            return hdu
    instead = _INSTEAD.get(what, "read it as astropy.io.fits.HDUList")
    raise location.format_error(f"has no {what} HDU; its HDUs are {hdu_names(hdul)}: {instead}")


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
        if not hasattr(raw, "verify_datasum"):  # SIMPLE = F: astropy cannot check its sums
            continue
        if "DATASUM" in header and raw.verify_datasum() == 0:
            raise location.format_error(
                f"DATASUM of HDU {_hdu_label(hdu)} does not match its data: the file is corrupt"
            )
        if "CHECKSUM" in header and raw.verify_checksum() == 0:
            raise location.format_error(
                f"CHECKSUM of HDU {_hdu_label(hdu)} does not match: the file is corrupt"
            )


@contextlib.contextmanager
def _memory_errors(location: ButlerLocation) -> Iterator[None]:
    """A `MemoryError` while reading is a `FormatError`: the file declared more than this
    process can allocate (even under the read limit)."""
    try:
        yield
    except MemoryError:
        raise location.format_error(
            "declares more data than this process can allocate; lower max_read_bytes to have "
            "such files refused before reading, or read a section"
        ) from None


@contextlib.contextmanager
def open_source(
    location: ButlerLocation,
    *,
    path: bool = False,
    memmap: bool = False,
    character_as_bytes: bool = False,
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
    character_as_bytes
        Table string columns as ``bytes`` (what ``Table.read`` gives) rather than ``str``
        (what ``fits.open`` gives).
    """
    if path:
        with location.local_path() as local:
            with open(local, "rb") as f:
                head = f.read(80)
                size = f.seek(0, 2)
            check_signature(head, location)
            with (
                _memory_errors(location),
                fits.open(
                    local,
                    mode="readonly",
                    memmap=memmap,
                    lazy_load_hdus=True,
                    character_as_bytes=character_as_bytes,
                ) as hdul,
            ):
                yield FitsSource(hdul, size, location, not head.startswith(b"SIMPLE"), local)
        return
    with location.open_read() as f, _memory_errors(location):
        yield from _open_fileobj(f, location, character_as_bytes)


def _open_fileobj(
    f: IO[bytes], location: ButlerLocation, character_as_bytes: bool = False
) -> Iterator[FitsSource]:
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
    with fits.open(
        stream,
        mode="readonly",
        memmap=False,
        lazy_load_hdus=True,
        character_as_bytes=character_as_bytes,
    ) as hdul:
        yield FitsSource(hdul, size, location, compressed, stream)


@contextlib.contextmanager
def open_fileobj(
    f: IO[bytes], location: ButlerLocation, *, character_as_bytes: bool = False
) -> Iterator[FitsSource]:
    """Open an already opened, seekable binary file (e.g. an fsspec file on S3)."""
    with _memory_errors(location):
        yield from _open_fileobj(f, location, character_as_bytes)


class _Stream:
    """Write-only view of the storage's file, so astropy streams through ``write``.

    astropy treats anything with a ``raw`` attribute as a real file and asks for its mode;
    hiding it keeps astropy in its sequential "ostream" mode, which never seeks.
    """

    closed = False

    def __init__(self, f: Any) -> None:
        self._f = f
        #: The first OS error the storage raised (a full disk, a quota, an I/O error).
        self.error: OSError | None = None

    def write(self, data: Any) -> int:
        try:
            return self._f.write(data)
        except OSError as exc:
            self.error = self.error or exc
            raise

    def flush(self) -> None:
        self._f.flush()

    def tell(self) -> int:
        return self._f.tell()


def write_hdulist(hdul: fits.HDUList, location: ButlerLocation, *, checksum: bool = False) -> None:
    """Write ``hdul`` atomically through `ButlerLocation.open_write` (streamed, no temp file).

    A key ending in ``.gz`` is gzip-compressed on the fly. ``checksum`` adds CHECKSUM and
    DATASUM keywords to every HDU. Headers are verified first (``output_verify="exception"``).
    """
    # Images are converted to FITS's byte order a chunk at a time, never in place (`._chunked`).
    hdul = fits.HDUList([chunked(hdu) for hdu in hdul])
    with location.open_write() as f:
        if location.key.endswith(".gz"):
            with gzip.GzipFile(fileobj=f, mode="wb", compresslevel=6) as gz:
                _writeto(hdul, _Stream(gz), checksum, location)
        else:
            _writeto(hdul, _Stream(f), checksum, location)


def _writeto(hdul: fits.HDUList, stream: _Stream, checksum: bool, location: ButlerLocation) -> None:
    """``hdul.writeto(stream)``, re-raising the storage's own OS error when astropy hides it.

    On a write error astropy's free-space check looks up the output's directory, fails
    on a stream (AttributeError) and raises that instead: a full disk would be reported as
    a format error. The storage's error (ENOSPC, EDQUOT, EIO...) is what the caller must see.
    """
    try:
        hdul.writeto(stream, checksum=checksum, output_verify="exception")
    except fits.VerifyError as exc:
        if stream.error is not None:
            raise stream.error from None
        raise location.format_error(
            f"cannot be written: astropy refuses these headers as they are (not FITS "
            f"standard), and butler never fixes what it is given: {str(exc).strip()}\n"
            f"Fix them first (e.g. hdul.verify('fix') on a copy) and put the result"
        ) from None
    except Exception as exc:
        error = stream.error or os_error_in_chain(exc)
        if error is not None and error is not exc:
            raise error from None
        raise


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
