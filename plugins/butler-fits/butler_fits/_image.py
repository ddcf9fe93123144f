"""`numpy.ndarray` ↔ FITS image HDU (optionally tile-compressed), any numeric dtype.

FITS images hold big-endian 8/16/32/64-bit integers and 32/64-bit floats (unsigned and
int8 through BZERO). Everything else numeric is stored as an exact *view* with the same
bytes (bool as uint8, float16 as int16, complex as a trailing real/imaginary axis, other
types as raw bytes), and the original dtype — byte order included — is recorded in the
``BUTLDTYP`` keyword, so a round trip returns the very dtype and values that were written.
Masked arrays get their mask in a ``MASK`` image extension.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
from astropy.io import fits

from ._fitsfile import (
    FitsSource,
    check_args,
    first_hdu,
    is_nonstandard,
    record_type,
    recorded_type,
    verify_hdus,
    write_hdulist,
)
from ._rows import is_table, refuse_groups, table_rows
from ._stored import open_stored

if TYPE_CHECKING:
    from butler import ButlerLocation

__all__ = ["image_section", "read", "storage_view", "write"]

KW_DTYPE = "BUTLDTYP"
KW_SHAPE = "BUTLSHAP"
MASK_EXTNAME = "MASK"

#: (kind, itemsize) pairs FITS images store natively (some through BZERO).
_NATIVE = {("u", 1), ("i", 1), ("i", 2), ("u", 2), ("i", 4), ("u", 4), ("i", 8), ("u", 8)}
_NATIVE |= {("f", 4), ("f", 8)}


def storage_view(dtype: np.dtype[Any]) -> tuple[np.dtype[Any], int]:
    """The dtype FITS stores ``dtype``'s bytes as, and the length of an extra trailing axis.

    Raises
    ------
    TypeError
        For dtypes that are not numeric (objects, strings, structured records).
    """
    kind, size = dtype.kind, dtype.itemsize
    order = dtype.byteorder if dtype.byteorder in "<>" else "="
    if (kind, size) in _NATIVE:
        return dtype, 0
    if kind == "b":
        return np.dtype(np.uint8), 0
    if kind == "f" and size == 2:
        return np.dtype(f"{order}i2"), 0
    if kind == "c" and size in (8, 16):
        return np.dtype(f"{order}f{size // 2}"), 2
    if kind in "mM":
        return np.dtype(f"{order}i8"), 0
    if kind in "fc":  # long double and its complex: raw bytes
        return np.dtype(np.uint8), size
    raise TypeError(
        f"the FITS image serializer stores numeric arrays only, not dtype {dtype.str!r}; "
        f"store records or strings as an astropy.table.Table"
    )


def _to_storage(array: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    view, extra = storage_view(array.dtype)
    if view == array.dtype:
        stored = array.view()
    elif extra:
        contiguous = np.ascontiguousarray(array)  # copies only a non-contiguous input
        stored = contiguous.view(view).reshape((*array.shape, extra))
    else:
        stored = array.view(view)
    # astropy byte-swaps a writable little-endian array in place while writing it (and
    # back afterwards): another thread would see swapped values, and an interrupted
    # write would leave them so. A read-only view keeps it from doing so (`write_hdulist`
    # converts it a chunk at a time).
    stored.flags.writeable = False
    return stored


def write(
    obj: np.ndarray[Any, Any],
    location: ButlerLocation,
    *,
    checksum: bool = False,
    compress: str | None = None,
    compress_args: Mapping[str, Any] | None = None,
    **_: Any,
) -> None:
    """Write an array as the primary image (or a compressed image in extension 1).

    Parameters
    ----------
    obj
        Any numeric array (masked arrays keep their mask in a ``MASK`` extension).
    location
        Where to write.
    checksum
        Add CHECKSUM/DATASUM keywords.
    compress
        Tile compression (``"RICE_1"``, ``"GZIP_1"``, ``"GZIP_2"``, ``"HCOMPRESS_1"``,
        ``"PLIO_1"``): the image goes into a `~astropy.io.fits.CompImageHDU`.
    compress_args
        Extra `~astropy.io.fits.CompImageHDU` arguments (``tile_shape``,
        ``quantize_level``...). Floats are quantized (lossy) unless ``quantize_level=0``
        with a GZIP compression.
    """
    check_args(location, checksum, compress, compress_args, images=True)
    mask = None
    if isinstance(obj, np.ma.MaskedArray):
        mask = np.ma.getmaskarray(obj)
        array = obj.data
    else:
        array = np.asarray(obj)
    keywords: list[tuple[str, Any, str]] = [(KW_DTYPE, array.dtype.str, "numpy dtype written")]
    stored: np.ndarray[Any, Any] | None = _to_storage(
        array.reshape(1) if array.ndim == 0 else array
    )
    if array.ndim == 0 or array.size == 0:  # FITS has no 0-d or empty images
        keywords.append((KW_SHAPE, json.dumps(list(array.shape)), "numpy shape written"))
        stored = stored if array.size else None
    hdus: list[Any] = [fits.PrimaryHDU()]
    if compress and stored is not None:
        image: Any = fits.CompImageHDU(
            stored, compression_type=compress, **dict(compress_args or {})
        )
        hdus.append(image)
    else:
        image = fits.PrimaryHDU(stored)
        hdus = [image]
    for keyword, value, comment in keywords:
        image.header[keyword] = (value, comment)
    record_type(image.header, obj)
    if mask is not None:
        hdus.append(fits.ImageHDU(mask.view(np.uint8), name=MASK_EXTNAME))
    write_hdulist(fits.HDUList(hdus), location, checksum=checksum)


def _is_image(hdu: Any) -> bool:
    return isinstance(hdu, fits.PrimaryHDU | fits.ImageHDU) and (
        hdu.header.get("NAXIS", 0) > 0 or KW_SHAPE in hdu.header
    )


def image_section(location: ButlerLocation) -> tuple[Any, ...] | None:
    section = location.parameters.get("section")
    if section is None:
        return None
    if not isinstance(section, tuple):
        section = tuple(section) if isinstance(section, list) else (section,)
    for item in section:
        if not isinstance(item, slice | int | np.integer) and item is not Ellipsis:
            raise location.format_error(
                f"parameter section={section!r} must be a tuple of slices and integers"
            )
    return section


def as_dtype(data: np.ndarray[Any, Any], want: np.dtype[Any]) -> np.ndarray[Any, Any]:
    """``data`` with exactly dtype ``want``: byte-swapped in place when only the order differs."""
    if data.dtype == want and data.dtype.byteorder == want.byteorder:
        return data
    if data.dtype.newbyteorder("S") == want and data.flags.writeable and data.flags.c_contiguous:
        data.byteswap(inplace=True)  # a fresh (or copy-on-write) buffer: no second copy
        return data.view(want)
    return data.astype(want)


def restore(
    data: np.ndarray[Any, Any] | None, header: Any, section: tuple[Any, ...] | None
) -> np.ndarray[Any, Any]:
    """Undo `write`'s storage view using the recorded dtype and shape."""
    dtype_str = header.get(KW_DTYPE)
    if KW_SHAPE in header:
        shape = json.loads(header[KW_SHAPE])
        if data is None or not shape:  # empty array, or a scalar read as a whole
            value = np.zeros(shape, dtype=np.dtype(dtype_str or "f8"))
            if data is not None:
                value[()] = restore(data, {KW_DTYPE: dtype_str}, None)[0]
            return value[section] if section is not None else value
    if data is None:
        return np.zeros((0,), dtype=np.dtype(dtype_str or "f8"))
    if dtype_str is None:  # a file butler did not write: astropy's own dtype
        return np.array(data, copy=None)
    want = np.dtype(dtype_str)
    view, extra = storage_view(want)
    data = as_dtype(data, view)
    if view == want:
        return data
    if extra:
        return np.ascontiguousarray(data).view(want)[..., 0]
    return data.view(want)


def read_array(
    source: FitsSource, location: ButlerLocation, *, checksum: bool = False
) -> np.ndarray[Any, Any]:
    """Read the image HDU (or the ``hdu`` asked for); ``section`` reads only that part."""
    hdu = source.hdu(lambda hdul: first_hdu(hdul, _is_image, "image", location))
    source.check_complete(hdu)
    header = hdu.header
    section = image_section(location)
    refuse_groups(hdu, location)
    if is_nonstandard(hdu):
        raise location.format_error(
            "is a non-standard FITS file (SIMPLE = F): astropy gives its header and raw "
            "bytes only; read it as astropy.io.fits.HDUList"
        )
    if is_table(hdu):  # asked for by ``hdu``: the rows, as astropy's FITS_rec gives them
        source.check_size([hdu])
        if checksum:
            verify_hdus([hdu], location)
        rows = table_rows(hdu, location)
        return rows[section] if section is not None else rows
    # The image of a file written as another type (a CCDData's primary HDU holds its
    # image; BUTLDTYP marks files the array serializer wrote) is read as astropy gives it.
    recorded = recorded_type(header) if KW_DTYPE in header else None
    cls = location.read_type(recorded) if recorded else location.expected_type()
    if section is None or KW_SHAPE in header or header.get("NAXIS", 0) == 0:
        source.check_size([hdu])
    if section is None:
        if checksum:  # first: decompressing an image alters its table's in-memory data
            verify_hdus([hdu], location)
        target = storage_view(np.dtype(header[KW_DTYPE]))[0] if KW_DTYPE in header else None
        data = _read_raw(source, hdu, target)
        if data is None:
            data = hdu.data
    elif KW_SHAPE in header or hdu.header.get("NAXIS", 0) == 0:
        data = hdu.data  # empty or scalar: nothing worth cutting out
    else:
        _view, extra = storage_view(np.dtype(header.get(KW_DTYPE, "f8")))
        full = (*section, slice(None)) if extra and KW_DTYPE in header else section
        source.check_size([hdu], section=full)  # the cutout only, not the whole image
        target = storage_view(np.dtype(header[KW_DTYPE]))[0] if KW_DTYPE in header else None
        data = _read_raw_section(source, hdu, target, full)
        if data is None:
            data = hdu.section[full]
            if isinstance(data, np.ndarray) and not data.flags.owndata:
                data = np.array(data)  # detach the (small) cutout from the file's memory map
    array = restore(data, header, section)
    if issubclass(cls, np.ma.MaskedArray):
        mask = _read_mask(source, location, section, checksum and section is None)
        return np.ma.MaskedArray(array, mask=mask)
    return array if type(array) is cls else array.view(cls)


_BITPIX = {8: "u1", 16: ">i2", 32: ">i4", 64: ">i8", -32: ">f4", -64: ">f8"}
#: Read whole images in pieces this large, byte-swapping each while it is still in cache.
_CHUNK = 2**20


def _read_raw(
    source: FitsSource, hdu: Any, target: np.dtype[Any] | None
) -> np.ndarray[Any, Any] | None:
    """Read an unscaled, uncompressed image straight into its final array, or None.

    astropy reads a file object into a bytes object and copies it into an array (twice
    the image in memory), and leaves the data big-endian, so a native array costs another
    pass. Here ``readinto`` fills the array piece by piece (on S3: one ranged GET streamed
    into it) and each piece is byte-swapped to ``target``'s order while still in cache.
    """
    plan = _raw_plan(source, hdu, target)
    if plan is None:
        return None
    out, swap = plan.out, plan.swap
    array = np.empty(plan.shape, dtype=out)
    flat = array.reshape(-1)
    view = memoryview(flat).cast("B")  # type: ignore[arg-type]
    step = max(_CHUNK // out.itemsize, 1) * out.itemsize
    with contextlib.ExitStack() as stack:
        f: Any = source.file
        if isinstance(f, str):
            f = stack.enter_context(open(f, "rb", buffering=0))
        f.seek(plan.data_start)
        for begin in range(0, len(view), step):
            end = min(begin + step, len(view))
            done = begin
            while done < end:
                got = f.readinto(view[done:end])
                if not got:
                    raise source.location.format_error(
                        f"is truncated: the image data stops after {done} of {len(view)} bytes"
                    )
                done += got
            if swap:
                flat[begin // out.itemsize : end // out.itemsize].byteswap(inplace=True)
    return array


def _read_raw_section(
    source: FitsSource, hdu: Any, target: np.dtype[Any] | None, section: tuple[Any, ...]
) -> np.ndarray[Any, Any] | None:
    """Read a cutout of unit-step slices of an unscaled, uncompressed image straight into
    its final array, row by row, or None (then astropy's ``.section`` reads it).

    astropy's ``.section`` reads the rows into a buffer, which butler then copied and
    byte-swapped: two cutouts in memory at once. Here each row of the cutout (a contiguous
    run of the file) is read into its place and the whole swapped in place: one cutout."""
    plan = _raw_plan(source, hdu, target)
    if plan is None or len(section) > len(plan.shape):
        return None
    if not all(isinstance(s, slice) for s in section):
        return None
    slices = [*section, *[slice(None)] * (len(plan.shape) - len(section))]
    ranges = [s.indices(n) for s, n in zip(slices, plan.shape, strict=True)]
    if any(step != 1 for _, _, step in ranges):
        return None
    starts = [start for start, _, _ in ranges]
    counts = [max(0, stop - start) for start, stop, _ in ranges]
    array = np.empty(counts, dtype=plan.out)
    if array.size == 0:
        return array
    item = plan.out.itemsize
    # Element strides of the whole image (C order: the last axis is NAXIS1, contiguous).
    strides = [int(np.prod(plan.shape[k + 1 :], dtype=np.int64)) for k in range(len(counts))]
    rows = array.reshape(-1, counts[-1])
    with contextlib.ExitStack() as stack:
        f: Any = source.file
        if isinstance(f, str):
            f = stack.enter_context(open(f, "rb", buffering=0))
        for r, outer in enumerate(np.ndindex(*counts[:-1])):
            first = starts[-1] + sum((starts[k] + i) * strides[k] for k, i in enumerate(outer))
            f.seek(plan.data_start + first * item)
            view = memoryview(rows[r]).cast("B")
            done = 0
            while done < len(view):
                got = f.readinto(view[done:])
                if not got:
                    raise source.location.format_error(
                        "is truncated: the image data stops inside the section asked for"
                    )
                done += got
    if plan.swap:
        array.byteswap(inplace=True)
    return array


class _RawPlan(NamedTuple):
    shape: tuple[int, ...]
    out: np.dtype[Any]
    swap: bool
    data_start: int


def _raw_plan(source: FitsSource, hdu: Any, target: np.dtype[Any] | None) -> _RawPlan | None:
    """How to read ``hdu``'s image bytes directly (shape, dtype to read into, whether to
    byte-swap, where the data starts), or None when astropy must (scaled, compressed...)."""
    header = hdu.header
    if source.compressed or isinstance(hdu, fits.CompImageHDU):
        return None
    if header.get("BSCALE", 1) != 1 or header.get("BZERO", 0) != 0 or "BLANK" in header:
        return None
    naxis = header.get("NAXIS", 0)
    stored = _BITPIX.get(header.get("BITPIX"))
    info = hdu.fileinfo()
    if not naxis or stored is None or info is None:
        return None
    shape = tuple(int(header[f"NAXIS{i}"]) for i in range(naxis, 0, -1))
    raw = np.dtype(stored)
    out = raw
    if target is not None and (target.kind, target.itemsize) == (raw.kind, raw.itemsize):
        out = target
    swap = out.itemsize > 1 and out.newbyteorder("S") == raw and out != raw
    return _RawPlan(shape, out, swap, int(info["datLoc"]))


def _read_mask(
    source: FitsSource, location: ButlerLocation, section: tuple[Any, ...] | None, verify: bool
) -> np.ndarray[Any, Any]:
    try:
        hdu = source.hdul[MASK_EXTNAME]
    except KeyError:
        raise location.format_error(
            f"was written as a masked array but has no {MASK_EXTNAME!r} extension"
        ) from None
    source.check_complete(hdu)
    source.check_size([hdu], section=section)
    if verify:
        verify_hdus([hdu], location)
    data = hdu.data if section is None else hdu.section[section]
    return np.asarray(data).astype(bool)


def read(location: ButlerLocation, *, checksum: bool = False, **args: Any) -> np.ndarray[Any, Any]:
    """Read an image from any storage (`open_stored`): whole images with one read,
    sections row by row, fetching only their rows (on S3: only their blocks).

    No memory map: astropy refuses to map scaled (BZERO) images, and `.section` on a real
    file already seeks to and reads only the rows of the cutout.
    """
    with open_stored(location, character_as_bytes=True, **args) as source:
        return read_array(source, location, checksum=checksum)
