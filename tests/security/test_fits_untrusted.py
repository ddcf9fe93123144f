"""FITS files written by someone else (issue 12, holes 12 and 19, and the FITS audit).

* a small ``.fits.gz`` (or a sparse ``.fits``, or a tile-compressed HDU with a forged
  ZNAXISn) declaring a huge image or table is refused *before* anything is allocated, with
  a `FormatError` naming the declared size and ``max_read_bytes``, on every storage;
  never a raw `MemoryError`; under the limit it reads; a ``section`` counts its cutout only;
* YAML in table headers (butler's meta block, astropy's serialized columns) cannot expand
  aliases without bound ("billion laughs");
* a full disk during a FITS write is a `StorageError` saying so, not a format error.
"""

from __future__ import annotations

import gzip
import io
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import butler
from butler import Butler, FormatError, StorageError

from .._mounts import mounted
from ..reliability.helpers import Repo

np = pytest.importorskip("numpy")
fits = pytest.importorskip("astropy.io.fits")
pytest.importorskip("butler_fits")

MiB = 2**20
LIMIT = 16 * MiB
#: The bomb's image: 4096 x 2048 float64 = 64 MiB, gzip-compressed to about 64 KiB.
SHAPE = (2048, 4096)
DECLARED = SHAPE[0] * SHAPE[1] * 8


def _gzip_fits(header: Any, data_bytes: int) -> bytes:
    """A gzip stream of ``header`` followed by ``data_bytes`` zeros (padded to 2880)."""
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=1) as gz:
        gz.write(header.tostring().encode("ascii"))
        chunk = bytes(MiB)
        left = -(-data_bytes // 2880) * 2880
        while left:
            gz.write(chunk[: min(left, MiB)])
            left -= min(left, MiB)
    return out.getvalue()


def _image_header(shape: tuple[int, ...], bitpix: int = -64) -> Any:
    header = fits.Header()
    header["SIMPLE"] = True
    header["BITPIX"] = bitpix
    header["NAXIS"] = len(shape)
    for i, n in enumerate(reversed(shape), start=1):
        header[f"NAXIS{i}"] = n
    return header


@pytest.fixture(scope="module")
def image_bomb() -> bytes:
    data = _gzip_fits(_image_header(SHAPE), DECLARED)
    assert len(data) < DECLARED // 200  # a real bomb: ~64 KiB inflating to 64 MiB
    return data


@pytest.fixture(scope="module")
def table_bomb() -> bytes:
    """An empty primary HDU, then a binary table of 1M rows x 64 bytes (64 MiB)."""
    primary = fits.PrimaryHDU().header.tostring().encode("ascii")
    cols = fits.ColDefs([fits.Column(name="x", format="8D")])
    table = fits.BinTableHDU.from_columns(cols, nrows=1).header
    table["NAXIS2"] = MiB
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=1) as gz:
        gz.write(primary)
        gz.write(table.tostring().encode("ascii"))
        for _ in range(64):
            gz.write(bytes(MiB))
        gz.write(bytes(-(64 * MiB) % 2880))
    return out.getvalue()


def _plant(repo: Repo, dataset_type: str, python_type: Any, data: bytes, **kw: Any) -> None:
    with repo.create() as b:
        b.register_dataset_type(
            dataset_type, python_type, "fits", dimensions={"visit": int},
            template=f"{dataset_type}/{{visit}}.fits.gz", **kw,
        )  # fmt: skip
        b.storage.write_bytes(f"{dataset_type}/1.fits.gz", data)


def _refused(call: Any, declared: int, limit: int = LIMIT) -> FormatError:
    """``call()`` raises a FormatError naming the sizes, allocating far less than declared."""
    tracemalloc.start()
    try:
        with pytest.raises(FormatError) as info:
            call()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    message = str(info.value)
    assert f"declares {declared:,} bytes" in message, message
    assert f"read limit of {limit:,} bytes" in message and "max_read_bytes" in message
    assert peak < limit, f"allocated {peak:,} bytes before refusing"
    return info.value


@pytest.mark.parametrize("python_type", ["numpy.ndarray", "astropy.io.fits.HDUList"])
def test_gzip_image_bomb_is_refused_on_every_storage(
    storage_root: Repo, image_bomb: bytes, python_type: str
) -> None:
    _plant(storage_root, "img", python_type, image_bomb)
    with storage_root.open(max_read_bytes=LIMIT) as b:
        error = _refused(lambda: b.get("img", visit=1), DECLARED)
        assert "HDU PRIMARY (4096 x 2048, BITPIX -64)" in str(error)


def test_gzip_table_bomb_is_refused(storage_root: Repo, table_bomb: bytes) -> None:
    _plant(storage_root, "cat", "astropy.table.Table", table_bomb)
    with storage_root.open(max_read_bytes=LIMIT) as b:
        _refused(lambda: b.get("cat", visit=1), 64 * MiB)
        _refused(lambda: b.get("cat", visit=1, parameters={"columns": ["x"]}), 64 * MiB)


def test_read_file_bomb_refused_then_read_under_the_limit(
    tmp_path: Path, image_bomb: bytes
) -> None:
    path = tmp_path / "bomb.fits.gz"
    path.write_bytes(image_bomb)
    _refused(lambda: butler.read_file(str(path), max_read_bytes=LIMIT), DECLARED)
    _refused(
        lambda: butler.read_file(
            str(path), max_read_bytes=LIMIT, python_type="astropy.nddata.CCDData"
        ),
        DECLARED,
    )
    image = butler.read_file(str(path), max_read_bytes=DECLARED)
    assert image.shape == SHAPE and not image.any()


def test_sparse_image_section_counts_the_cutout_only(tmp_path: Path) -> None:
    """A 64 MiB (sparse) uncompressed image on posix: the whole image is refused under a
    16 MiB limit, a 100x100 cutout is read (only its rows are)."""
    Butler.create(str(tmp_path / "repo"))
    b = Butler(str(tmp_path / "repo"), max_read_bytes=LIMIT)
    b.register_dataset_type("img", "numpy.ndarray", "fits", dimensions={"visit": int})
    path = tmp_path / "repo" / "img" / "1.fits"
    path.parent.mkdir()
    header = _image_header(SHAPE).tostring().encode("ascii")
    with open(path, "wb") as f:
        f.write(header)
        f.truncate(len(header) + -(-DECLARED // 2880) * 2880)  # zeros, no disk blocks
    _refused(lambda: b.get("img", visit=1), DECLARED)
    cut = b.get("img", visit=1, parameters={"section": (slice(10, 110), slice(0, 100))})
    assert cut.shape == (100, 100) and not cut.any()
    with pytest.raises(FormatError, match="cutout 2048 x 4096"):
        b.get("img", visit=1, parameters={"section": (slice(None), ...)})


def _forge(data: bytes, keyword: str, value: int) -> bytes:
    """Replace the value of one header card (same 80 characters), as a hostile writer."""
    key = keyword.ljust(8).encode() + b"= "
    at = data.index(key)
    card = (key + str(value).rjust(20).encode()).ljust(80)
    return data[:at] + card + data[at + 80 :]


def test_tile_compressed_forged_znaxis(tmp_path: Path) -> None:
    """A tile-compressed image whose ZNAXISn claim 2^20 x 2^20 pixels (4 TiB)."""
    Butler.create(str(tmp_path / "repo"))
    b = Butler(str(tmp_path / "repo"), max_read_bytes=LIMIT)
    b.register_dataset_type(
        "img", "numpy.ndarray", "fits", dimensions={"visit": int},
        serializer_args={"compress": "GZIP_1", "compress_args": {"quantize_level": 0}},
    )  # fmt: skip
    b.put(np.zeros((64, 64), dtype=np.float32), "img", visit=1)
    path = tmp_path / "repo" / "img" / "1.fits"
    forged = _forge(_forge(path.read_bytes(), "ZNAXIS1", 2**20), "ZNAXIS2", 2**20)
    path.write_bytes(forged)
    error = _refused(lambda: b.get("img", visit=1), _declared_tiled(2**20, 2**20, forged))
    assert "tile-compressed image 1048576 x 1048576, ZBITPIX -32" in str(error)
    # Even a reader who allows everything gets a FormatError, never a MemoryError.
    trusting = Butler(str(tmp_path / "repo"), max_read_bytes=2**62)
    with pytest.raises(FormatError):
        trusting.get("img", visit=1)


def _declared_tiled(nx: int, ny: int, data: bytes) -> int:
    with fits.open(io.BytesIO(data), disable_image_compression=True) as hdul:
        table = hdul[1].header
        raw = table["NAXIS1"] * table["NAXIS2"] + table["PCOUNT"]
        tiles = ny * -(-nx // table["ZTILE1"])
    return raw + nx * ny * 4 + 8 * tiles


@pytest.mark.parametrize("limit", [None, 2**62])
def test_huge_declared_shape_is_a_format_error_not_memory_error(
    tmp_path: Path, limit: int | None
) -> None:
    """8 TiB declared in a 100-byte gzip: refused by the default limit (available memory),
    and still a FormatError when the reader sets an enormous limit."""
    path = tmp_path / "huge.fits.gz"
    path.write_bytes(_gzip_fits(_image_header((2**20, 2**20)), 2880))
    with pytest.raises(FormatError) as info:
        butler.read_file(str(path), max_read_bytes=limit)
    assert not isinstance(info.value, MemoryError)
    if limit is None:
        assert f"declares {2**43:,} bytes" in str(info.value)


@pytest.mark.parametrize(
    ("keyword", "value"), [("NAXIS1", -5), ("NAXIS2", "'abc'"), ("BITPIX", 12)]
)
def test_hostile_structural_keywords_are_format_errors(
    tmp_path: Path, keyword: str, value: Any
) -> None:
    header = _image_header((4, 4))
    raw = bytearray(header.tostring().encode("ascii"))
    at = raw.index(keyword.ljust(8).encode())
    raw[at : at + 80] = f"{keyword:<8}= {value!s:>20}".ljust(80).encode()
    path = tmp_path / "bad.fits.gz"
    path.write_bytes(gzip.compress(bytes(raw) + bytes(2880)))
    with pytest.raises(FormatError):
        butler.read_file(str(path))


# -- YAML in table headers -----------------------------------------------------------------

LAUGHS = "\n".join(
    ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    + [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
)


def _table_file(tmp_path: Path) -> Path:
    import astropy.units as u
    from astropy.table import QTable

    table = QTable({"a": np.arange(3) * u.m, "b": np.arange(3.0) * u.m})  # one shared unit
    table.meta["x"] = [1, 2]
    table.meta["y"] = table.meta["x"]  # a legitimate alias
    path = tmp_path / "t.fits"
    butler.write_file(table, str(path))
    return path


def test_legitimate_aliases_still_read(tmp_path: Path) -> None:
    path = _table_file(tmp_path)
    comments = "".join(str(c) for c in fits.getheader(path, 1)["COMMENT"])
    assert "*id001" in comments  # both YAML blocks use aliases
    back = butler.read_file(str(path), python_type="astropy.table.QTable")
    assert back.meta == {"x": [1, 2], "y": [1, 2]} and str(back["b"].unit) == "m"


def _replace_block(path: Path, begin: str, end: str, cards: list[str]) -> None:
    with fits.open(path) as hdul:
        header = hdul[1].header
        comments = [str(c) for c in header["COMMENT"]]
        start, stop = comments.index(begin), comments.index(end)
        new = comments[: start + 1] + cards + comments[stop:]
        header.remove("COMMENT", remove_all=True)
        for card in new:
            header.add_comment(card)
        hdul.writeto(path, overwrite=True)


def test_billion_laughs_in_butler_table_meta(tmp_path: Path) -> None:
    path = _table_file(tmp_path)
    cards = ["|meta:$"] + [f"|  {line}$" for line in LAUGHS.splitlines()] + ["|formats: {}$"]
    _replace_block(path, "--BEGIN-BUTLER-TABLE-META--", "--END-BUTLER-TABLE-META--", cards)
    with pytest.raises(FormatError, match=r"BUTLER-TABLE-META.*billion laughs"):
        butler.read_file(str(path), python_type="astropy.table.QTable")


def test_billion_laughs_in_astropy_serialized_columns(tmp_path: Path) -> None:
    path = _table_file(tmp_path)
    begin, end = "--BEGIN-ASTROPY-SERIALIZED-COLUMNS--", "--END-ASTROPY-SERIALIZED-COLUMNS--"
    with fits.open(path) as hdul:
        comments = [str(c) for c in hdul[1].header["COMMENT"]]
    block = comments[comments.index(begin) + 1 : comments.index(end)]
    laughs = ["meta:", "  __laughs__:"] + [f"    {line}" for line in LAUGHS.splitlines()]
    at = block.index("meta:") if "meta:" in block else len(block)
    _replace_block(path, begin, end, block[:at] + laughs + block[at + 1 :])
    with pytest.raises(FormatError, match=r"ASTROPY-SERIALIZED-COLUMNS.*billion laughs"):
        butler.read_file(str(path), python_type="astropy.table.QTable")


def test_recursive_alias_is_refused(tmp_path: Path) -> None:
    path = _table_file(tmp_path)
    cards = ["|meta: &m$", "|  self: *m$", "|formats: {}$"]
    _replace_block(path, "--BEGIN-BUTLER-TABLE-META--", "--END-BUTLER-TABLE-META--", cards)
    with pytest.raises(FormatError, match="recursive YAML alias"):
        butler.read_file(str(path), python_type="astropy.table.QTable")


# -- hole 19: a full disk ------------------------------------------------------------------


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs (skips when mounting is not allowed)."""
    with mounted(tmp_path / "tiny") as mnt:
        yield mnt


class PathWriter:
    """A common-API class writing with astropy to a path (astropy's own ENOSPC message)."""

    def __init__(self, data: Any) -> None:
        self.data = data

    def writeFits(self, path: str) -> None:
        fits.PrimaryHDU(self.data).writeto(path)

    @classmethod
    def readFits(cls, path: str, hdu: int = 0) -> PathWriter:
        return cls(fits.getdata(path, hdu))


def test_full_disk_during_a_fits_write_is_a_storage_error(tiny_fs: Path) -> None:
    from astropy.table import Table

    b = Butler.create(str(tiny_fs / "repo"))
    big = np.random.default_rng(0).random(2**19)  # 4 MiB of incompressible floats
    cases: list[tuple[str, Any, Any, dict[str, Any]]] = [
        ("img", "numpy.ndarray", big, {}),
        ("gz", "numpy.ndarray", big, {"template": "gz/{visit}.fits.gz"}),
        ("cat", "astropy.table.Table", Table({"x": big}), {}),
        ("hdul", "astropy.io.fits.HDUList", fits.HDUList([fits.PrimaryHDU(big)]), {}),
        ("common", PathWriter, PathWriter(big), {}),
    ]
    for name, python_type, obj, kw in cases:
        b.register_dataset_type(name, python_type, "fits", dimensions={"visit": int}, **kw)
        if name == "img":
            b.put(big[:10], name, visit=1)
        with pytest.raises(StorageError) as info:
            b.put(obj, name, visit=2)
        assert "No space left on device" in str(info.value), (name, str(info.value))
        assert not isinstance(info.value, FormatError)
    np.testing.assert_array_equal(b.get("img", visit=1), big[:10])
    assert sorted(d["visit"] for d in b.datasets("img")) == [1]
    b.put(np.arange(10.0), "img", visit=3)  # the failed writes gave their space back
