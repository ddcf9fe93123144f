"""``astropy.io.fits.HDUList``: every HDU of a FITS file in a documented HDF5 layout.

Layout (under ``additional_data["path"]``, default the root group)::

    /                       butler.layout = "fits-hdulist", butler.hdu_count = N,
                            butler.hdulist_type = the HDUList class written (not
                            butler.python_type: the file also reads as a plain dict)
    /hdu0 ... /hdu<N-1>     one group per HDU, in order; attributes EXTNAME (when the
                            HDU has one), XTENSION ("PRIMARY" for the first) and
                            butler.hdu_type (astropy's class: ImageHDU, BinTableHDU...)
      header                1-d fixed-length string dataset: the header's 80-character
                            cards exactly as FITS stores them (order, comments, COMMENT,
                            HISTORY, CONTINUE and blank cards; END left out)
      data                  the data exactly as FITS stores it (big-endian, unscaled):
                              image: an array of the BITPIX type, numpy axis order
                                     (BSCALE/BZERO/BLANK also as the CF attributes
                                     scale_factor/add_offset/_FillValue);
                              binary table (also tile-compressed images): a compound
                                     dataset, one field per column (TFORMn types;
                                     variable-length columns as (count, offset) pairs);
                              ASCII table: one fixed-length string per row;
                              anything else (random groups...): the bytes, uint8
      heap                  uint8: a binary table's heap (PCOUNT bytes), when present

Reading concatenates the header cards, the data and the heap back into FITS bytes and has
astropy open them, so the HDUList read equals what ``astropy.io.fits.open`` gives for the
original file: data (scaling included), header cards, table columns.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Callable
from typing import Any

import h5py
import numpy as np

from butler import ButlerLocation
from butler.types import type_name

from . import _guards, h5py_

__all__ = ["LAYOUT", "read", "write"]

#: Value of the ``butler.layout`` attribute marking a group holding an HDU list.
LAYOUT = "fits-hdulist"
_ATTR_LAYOUT = "butler.layout"
_ATTR_COUNT = "butler.hdu_count"
_ATTR_HDU_TYPE = "butler.hdu_type"
_ATTR_CLASS = "butler.hdulist_type"
_BLOCK = 2880
_CARD = 80
_BITPIX = {8: "u1", 16: ">i2", 32: ">i4", 64: ">i8", -32: ">f4", -64: ">f8"}
_TFORM = re.compile(r"^\s*(\d*)([LXBIJKAEDCMPQ])")
_TFORM_TYPES = {
    "L": "i1", "B": "u1", "I": ">i2", "J": ">i4", "K": ">i8",
    "E": ">f4", "D": ">f8", "C": ">c8", "M": ">c16",
}  # fmt: skip


def _padded(data: bytes, fill: bytes = b"\0") -> bytes:
    return data + fill * (-len(data) % _BLOCK)


def _table_dtype(header: Any) -> np.dtype[Any] | None:
    """The row type of a binary table from its TFORMn, or None if it cannot be built."""
    fields: list[tuple[Any, ...]] = []
    names: set[str] = set()
    for n in range(1, int(header.get("TFIELDS", 0)) + 1):
        match = _TFORM.match(str(header.get(f"TFORM{n}", "")))
        if match is None:
            return None
        repeat = int(match.group(1) or 1)
        code = match.group(2)
        if code == "A":
            base: Any = f"S{repeat}" if repeat else None
            repeat = 1
        elif code == "X":
            base, repeat = "u1", (repeat + 7) // 8
        elif code in "PQ":
            base, repeat = (">i4" if code == "P" else ">i8"), 2 * min(repeat, 1)
        else:
            base = _TFORM_TYPES[code]
        if base is None or repeat == 0:
            continue  # a zero-width column takes no bytes
        name = str(header.get(f"TTYPE{n}", f"col{n}")) or f"col{n}"
        if name in names:
            return None
        names.add(name)
        fields.append((name, base) if repeat == 1 else (name, base, (repeat,)))
    dtype = np.dtype(fields)
    return dtype if dtype.itemsize == int(header.get("NAXIS1", -1)) else None


def _split_hdus(buffer: bytes, hdul: Any) -> list[tuple[Any, bytes, bytes]]:
    """``(header, header bytes, data bytes)`` of each HDU of the FITS file in ``buffer``."""
    from astropy.io import fits

    out = []
    for i in range(len(hdul)):
        info = hdul.fileinfo(i)
        raw_header = buffer[info["hdrLoc"] : info["datLoc"]]
        header = fits.Header.fromstring(raw_header.decode("ascii"))
        out.append((header, raw_header, buffer[info["datLoc"] : info["datLoc"] + info["datSpan"]]))
    return out


def _data_nbytes(header: Any) -> int:
    """Bytes of data (heap included, padding excluded) the FITS standard gives for a header."""
    axes = [int(header.get(f"NAXIS{k}", 0)) for k in range(1, int(header.get("NAXIS", 0)) + 1)]
    if header.get("GROUPS") is True and axes and axes[0] == 0:
        axes = axes[1:]
    if not axes:
        return 0
    count = int(header.get("GCOUNT", 1)) * (int(header.get("PCOUNT", 0)) + math.prod(axes))
    return abs(int(header["BITPIX"])) // 8 * count


def _write_hdu(
    group: h5py.Group,
    hdu: Any,
    header: Any,
    raw_header: bytes,
    data: bytes,
    options: dict[str, Any],
) -> None:
    cards = [raw_header[i : i + _CARD] for i in range(0, len(raw_header), _CARD)]
    end = next(i for i, card in enumerate(cards) if card.rstrip() == b"END")
    group.create_dataset("header", data=np.array(cards[:end], dtype=f"S{_CARD}"))
    group.attrs[_ATTR_HDU_TYPE] = type(hdu).__name__
    group.attrs["XTENSION"] = str(header.get("XTENSION", "PRIMARY"))
    if "EXTNAME" in header:
        group.attrs["EXTNAME"] = str(header["EXTNAME"])
    data = data[: _data_nbytes(header)]
    if not data:
        return
    xtension = header.get("XTENSION", "PRIMARY")
    axes = [int(header[f"NAXIS{k}"]) for k in range(int(header["NAXIS"]), 0, -1)]
    if xtension in ("PRIMARY", "IMAGE") and not header.get("GROUPS"):
        image = np.frombuffer(data, dtype=_BITPIX[int(header["BITPIX"])]).reshape(axes)
        kwargs = h5py_.dataset_options(options, image.shape, strict=False)
        dataset = group.create_dataset("data", data=image, **kwargs)
        for keyword, attr in (("BSCALE", "scale_factor"), ("BZERO", "add_offset")):
            if keyword in header:
                dataset.attrs[attr] = np.float64(header[keyword])
        if "BLANK" in header and int(header["BITPIX"]) > 0:
            dataset.attrs["_FillValue"] = np.dtype(image.dtype).type(header["BLANK"])
        return
    if xtension in ("BINTABLE", "TABLE"):
        row_bytes, rows = int(header["NAXIS1"]), int(header["NAXIS2"])
        dtype = _table_dtype(header) if xtension == "BINTABLE" else np.dtype(f"S{row_bytes}")
        if dtype is not None:
            table = np.frombuffer(data[: row_bytes * rows], dtype=dtype)
            kwargs = h5py_.dataset_options(options, table.shape, strict=False)
            group.create_dataset("data", data=table, **kwargs)
            heap = data[row_bytes * rows :]
            if heap:
                group.create_dataset("heap", data=np.frombuffer(heap, dtype=np.uint8))
            return
    group.create_dataset("data", data=np.frombuffer(data, dtype=np.uint8))


def _detached(hdu: Any) -> Any:
    """``hdu`` to write without touching it: same state, its own header, a read-only image.

    A shallow copy keeps every attribute astropy writes from (``hdu.copy()`` would rebuild
    the HDU from its data, rescaling BZERO/BLANK images and dropping structural comments);
    the header is copied, and a loaded image becomes a read-only view so that astropy
    writes a byte-swapped copy instead of swapping the caller's array in place. Data not
    loaded yet is loaded by the copy, unscaled, never into the caller's HDU.
    """
    import copy

    work = copy.copy(hdu)
    work._header = hdu._header.copy()
    work.__dict__.pop("data", None)
    data = hdu.__dict__.get("data")
    if data is None and hasattr(hdu, "_do_not_scale_image_data"):
        # Not loaded yet: the copy loads the stored integers as they are (BSCALE/BZERO/
        # BLANK kept in its header), rather than astropy's scaled floats.
        work._do_not_scale_image_data = True
    if data is not None:
        if type(data) is np.ndarray and data.flags.writeable:
            data = data.view()
            data.flags.writeable = False
        work.__dict__["data"] = data
    return work


def write(obj: Any, location: ButlerLocation, **serializer_args: Any) -> None:
    """Write every HDU of an HDU list into the layout of this module's docstring.

    The list is serialized by astropy to FITS bytes first (with ``output_verify=
    "exception"``, so nothing is "fixed"; headers astropy updates while writing are set
    back, so the object given is never modified), then
    each HDU's header cards and data are copied into HDF5 as FITS stores them.
    """
    from astropy.io import fits

    buffer = io.BytesIO()
    # astropy's writeto changes what it writes (headers it "fixes", checksums, a
    # file-backed BSCALE image loaded and scaled in place): it writes shallow copies, so
    # the object given comes out exactly as it went in.
    work = fits.HDUList([_detached(hdu) for hdu in obj])
    work.writeto(buffer, output_verify="exception")
    raw = buffer.getvalue()
    path = h5py_.target_path(location, "/")
    with fits.open(io.BytesIO(raw), lazy_load_hdus=False) as parsed:
        hdus = list(zip(obj, _split_hdus(raw, parsed), strict=True))
    with h5py_.open_write(location) as f:
        root = f if path == "/" else f.create_group(path, track_order=True)
        root.attrs[_ATTR_LAYOUT] = LAYOUT
        root.attrs[_ATTR_COUNT] = len(hdus)
        root.attrs[_ATTR_CLASS] = type_name(type(obj))
        for i, (hdu, (header, raw_header, data)) in enumerate(hdus):
            group = root.create_group(f"hdu{i}", track_order=True)
            _write_hdu(group, hdu, header, raw_header, data, dict(serializer_args))


def _dataset(location: ButlerLocation, f: h5py.File, path: str) -> h5py.Dataset | None:
    node = _guards.resolve(location, f, path)
    if node is not None and not isinstance(node, h5py.Dataset):
        raise location.format_error(f"{path!r} in the HDF5 file is not a dataset")
    return node


def _read(location: ButlerLocation, opener: Callable[..., Any], args: dict[str, Any]) -> Any:
    from astropy.io import fits

    path = h5py_.target_path(location, "/")
    base = path.rstrip("/")
    with opener(location, **args) as f:
        root = h5py_.node_at(location, f, path)
        layout = _guards.read_attr(location, root, _ATTR_LAYOUT, path)
        if layout is None or str(layout) != LAYOUT or not isinstance(root, h5py.Group):
            raise location.format_error(
                f"the HDF5 group {path!r} does not hold a FITS HDU list written by butler "
                f"(no {_ATTR_LAYOUT}={LAYOUT!r} attribute); read it as a dict "
                f"(python_type='dict') or its arrays as 'numpy.ndarray' with "
                f"parameters={{'path': ...}}"
            )
        recorded = _guards.read_attr(location, root, _ATTR_CLASS, path)
        cls = location.read_type(None if recorded is None else str(recorded))
        count = int(_guards.read_attr(location, root, _ATTR_COUNT, path))
        parts = []
        for i in range(count):
            names = ("header", "data", "heap")
            nodes = [_dataset(location, f, f"{base}/hdu{i}/{name}") for name in names]
            if nodes[0] is None:
                raise location.format_error(f"HDU {i} of {count} has no {base}/hdu{i}/header")
            parts.append(nodes)
        # The FITS bytes are built in memory and parsed by astropy: count them twice.
        declared = sum(_guards.nbytes(n) + _guards.chunk_nbytes(n) for p in parts for n in p if n)
        location.check_read_size(2 * declared, what=f"the FITS HDU list in {path!r}")
        buffer = io.BytesIO()
        with _guards.memory_errors(location, f"the FITS HDU list in {path!r}"):
            for header, data, heap in parts:
                assert header is not None
                cards = b"".join(bytes(c).ljust(_CARD) for c in header[()])
                buffer.write(_padded(cards + b"END".ljust(_CARD), b" "))
                body = b"" if data is None else np.ascontiguousarray(data[()]).tobytes()
                body += b"" if heap is None else np.asarray(heap[()]).tobytes()
                buffer.write(_padded(body))
    buffer.seek(0)
    # Every HDU is parsed now; data stays lazy as in fits.open (touching a scaled image's
    # data makes astropy rewrite its header), but it is read from memory, not the storage.
    hdul = fits.open(buffer, lazy_load_hdus=False)
    return hdul if type(hdul) is cls else cls(list(hdul))


def read(location: ButlerLocation, **serializer_args: Any) -> Any:
    """Read the HDU list from any storage (`h5py_.open_read`)."""
    return _read(location, h5py_.open_read, serializer_args)
