"""numpy arrays as FITS images: dtypes, byte order, NaN, cubes, masks, sections, HDUs."""

from __future__ import annotations

import io

import pytest

pytest.importorskip("butler_fits", reason="butler-fits is not installed")

import numpy as np
from astropy.io import fits

from butler import Butler, FormatError

DTYPES = [
    "|u1",
    "|i1",
    "<i2",
    ">i2",
    "<u2",
    ">u2",
    "<i4",
    ">u4",
    "<i8",
    ">i8",
    "<u8",
    "<f4",
    ">f4",
    "<f8",
    ">f8",
    "<f2",
    "<c8",
    ">c16",
    "|b1",
    "<M8[s]",
    "<m8[ms]",
]


def _sample(dtype: str, shape: tuple[int, ...] = (3, 4, 5)) -> np.ndarray:
    dt = np.dtype(dtype)
    n = int(np.prod(shape))
    if dt.kind == "b":
        values = np.arange(n) % 3 == 0
    elif dt.kind == "u":
        top = np.iinfo(dt).max  # values near the top exercise BZERO
        values = np.array([top - i for i in range(n)], dtype=dt)
    elif dt.kind == "i":
        low = np.iinfo(dt).min
        values = np.array([low + i for i in range(n // 2)] + [i for i in range(n - n // 2)])
    elif dt.kind in "mM":
        values = np.arange(n) * 1000
    elif dt.kind == "c":
        values = np.arange(n) - 1.5j * np.arange(n)
    else:
        values = np.linspace(-1e3, 1e3, n)
    array = np.asarray(values).astype(dt).reshape(shape)
    if dt.kind in "fc":
        array.flat[1] = np.nan
        array.flat[2] = np.inf
    return array


def _same(got: np.ndarray, want: np.ndarray) -> None:
    assert type(got) is type(want)
    assert got.dtype.str == want.dtype.str
    assert got.shape == want.shape
    np.testing.assert_array_equal(got, want)  # NaN == NaN here


@pytest.fixture
def images(repo: Butler) -> Butler:
    repo.register_dataset_type("image", "numpy.ndarray", "fits", dimensions={"n": int})
    return repo


@pytest.mark.parametrize("dtype", DTYPES)
def test_round_trip_every_dtype(images: Butler, dtype: str) -> None:
    array = _sample(dtype)
    images.put(array, "image", n=1)
    got = images.get("image", n=1)
    _same(got, array)
    assert got.flags.writeable
    section = (slice(1, 3), slice(0, 4, 2), 2)
    _same(images.get("image", n=1, parameters={"section": section}), array[section])


def test_files_are_plain_fits(posix_repo: Butler, tools) -> None:
    posix_repo.register_dataset_type("image", "numpy.ndarray", "fits", dimensions={"n": int})
    for n, dtype in enumerate(["<f4", ">i2", "<u2", "|i1", "<c8", "|b1"]):
        array = _sample(dtype)
        posix_repo.put(array, "image", n=n)
        path = tools.path(posix_repo, "image", n=n)
        assert path.endswith(".fits")
        with fits.open(path) as hdul:
            assert len(hdul) == 1
            header = hdul[0].header
            assert header["BUTLDTYP"] == array.dtype.str
            assert header["BUTLTYPE"] == "numpy.ndarray"
            data = hdul[0].data
            if dtype in ("<f4", ">i2", "<u2", "|i1"):  # FITS-native: astropy sees the values
                np.testing.assert_array_equal(data, array)
            elif dtype == "<c8":  # real and imaginary parts on a trailing axis
                np.testing.assert_array_equal(data[..., 0] + 1j * data[..., 1], array)
            else:
                np.testing.assert_array_equal(data.astype(bool), array)


def test_nan_cube_and_large_values(images: Butler) -> None:
    cube = np.full((4, 5, 6), np.nan, dtype="<f8")
    cube[1:3, ::2, 1] = [[1e308, -1e-308, 0.0], [-0.0, 5e-324, 42.0]]
    images.put(cube, "image", n=1)
    got = images.get("image", n=1)
    _same(got, cube)
    assert np.signbit(got[2, 0, 1])  # -0.0 kept
    _same(images.get("image", n=1, parameters={"section": (2, slice(None), 1)}), cube[2, :, 1])


def test_input_array_is_left_untouched(images: Butler) -> None:
    array = _sample("<f4")
    before = array.copy()
    images.put(array, "image", n=1)  # astropy byte-swaps in place while writing
    _same(array, before)
    readonly = _sample("<i4")
    readonly.flags.writeable = False
    images.put(readonly, "image", n=2)
    _same(images.get("image", n=2), readonly)


def test_non_contiguous_input(images: Butler) -> None:
    base = _sample("<c16", (6, 8))
    view = base[::2, ::-3]
    images.put(view, "image", n=1)
    _same(images.get("image", n=1), np.ascontiguousarray(view))


def test_scalars_and_empty_arrays(images: Butler) -> None:
    for n, array in enumerate(
        [np.array(7, dtype=">i2"), np.array(2.5), np.zeros((0, 3), "<f4"), np.ones((2, 0), "?")]
    ):
        images.put(array, "image", n=n)
        _same(images.get("image", n=n), array)


def test_masked_array(images: Butler) -> None:
    data = _sample("<f4", (4, 5))
    masked = np.ma.MaskedArray(data, mask=data > 500)
    images.put(masked, "image", n=1)
    got = images.get("image", n=1)
    assert isinstance(got, np.ma.MaskedArray)
    np.testing.assert_array_equal(got.mask, masked.mask)
    np.testing.assert_array_equal(got.data, masked.data)
    cut = images.get("image", n=1, parameters={"section": (slice(1, 3), slice(2, 5))})
    np.testing.assert_array_equal(cut.mask, masked.mask[1:3, 2:5])
    np.testing.assert_array_equal(cut.data, data[1:3, 2:5])


def test_unsupported_dtype_is_a_clear_error(images: Butler) -> None:
    with pytest.raises(FormatError, match=r"'image'.*numeric arrays only.*astropy.table.Table"):
        images.put(np.array(["a", "b"]), "image", n=1)
    assert not images.exists("image", n=1)


def test_cutouts_equal_the_full_read(images: Butler) -> None:
    rng = np.random.default_rng(5)
    image = rng.normal(size=(64, 48)).astype(">f4")
    images.put(image, "image", n=1)
    full = images.get("image", n=1)
    for section in [
        (slice(10, 20), slice(5, 15)),
        (slice(None), slice(47, 48)),
        (slice(63, 64),),
        (5, slice(None, None, 7)),
        (slice(0, 64, 9), slice(1, None, 5)),
    ]:
        cut = images.get("image", n=1, parameters={"section": section})
        _same(cut, full[section])


def test_section_must_be_slices(images: Butler) -> None:
    images.put(np.zeros((3, 3)), "image", n=1)
    with pytest.raises(FormatError, match=r"'image'.*section=.*tuple of slices"):
        images.get("image", n=1, parameters={"section": ("a", 1)})


def _mef() -> bytes:
    buffer = io.BytesIO()
    fits.HDUList(
        [
            fits.PrimaryHDU(),
            fits.ImageHDU(np.arange(12, dtype=">i4").reshape(3, 4), name="SCI"),
            fits.ImageHDU(np.ones((3, 4), dtype=">f4"), name="VAR"),
            fits.ImageHDU(np.full((2, 2), 7, dtype=">i2"), name="SCI", ver=2),
        ]
    ).writeto(buffer)
    return buffer.getvalue()


def test_hdu_by_index_and_extname(images: Butler, tools) -> None:
    images.put(np.zeros(1), "image", n=1)
    tools.replace(images, "image", _mef(), keep_type=False, n=1)  # a file butler did not write
    default = images.get("image", n=1)  # the first HDU with an image
    np.testing.assert_array_equal(default, np.arange(12).reshape(3, 4))
    np.testing.assert_array_equal(images.get("image", n=1, parameters={"hdu": 2}), np.ones((3, 4)))
    np.testing.assert_array_equal(
        images.get("image", n=1, parameters={"hdu": "VAR", "section": (0,)}), np.ones(4)
    )
    np.testing.assert_array_equal(
        images.get("image", n=1, parameters={"hdu": ["SCI", 2]}), np.full((2, 2), 7)
    )
    with pytest.raises(FormatError, match=r"'image'.*has no HDU 'NOPE'.*1:SCI"):
        images.get("image", n=1, parameters={"hdu": "NOPE"})
    with pytest.raises(FormatError, match=r"'image'.*has no HDU 9"):
        images.get("image", n=1, parameters={"hdu": 9})


def test_hdu_from_additional_data(images: Butler, tools) -> None:
    images.register_dataset_type(
        "variance", "numpy.ndarray", "fits", "mef/{n}.fits", additional_data={"hdu": "VAR"}
    )
    images.register_dataset_type("science", "numpy.ndarray", "fits", "mef/{n}.fits")
    images.put(np.zeros(1), "science", n=1)
    tools.replace(images, "science", _mef(), keep_type=False, n=1)
    np.testing.assert_array_equal(images.get("variance", n=1), np.ones((3, 4)))
    np.testing.assert_array_equal(images.get("science", n=1), np.arange(12).reshape(3, 4))


@pytest.mark.parametrize(
    ("compress", "dtype", "args"),
    [
        ("RICE_1", "<i4", None),
        ("PLIO_1", ">i2", None),
        ("HCOMPRESS_1", "<i2", None),
        ("GZIP_2", "<f4", {"quantize_level": 0}),
        ("GZIP_1", ">f8", {"quantize_level": 0, "tile_shape": [1, 4, 5]}),
    ],
)
def test_tile_compressed_images(repo: Butler, tools, compress, dtype, args) -> None:
    repo.register_dataset_type(
        "packed",
        "numpy.ndarray",
        "fits",
        dimensions={"n": int},
        serializer_args={"compress": compress, "compress_args": args},
    )
    array = _sample(dtype, (3, 8, 10))
    if dtype.startswith(("<i", ">i")):
        array = (array % 1000).astype(dtype)
    repo.put(array, "packed", n=1)
    _same(repo.get("packed", n=1), array)
    section = (1, slice(2, 7), slice(None, None, 3))
    _same(repo.get("packed", n=1, parameters={"section": section}), array[section])
    raw = fits.open(io.BytesIO(tools.read_bytes(repo, "packed", n=1)))
    assert isinstance(raw[1], fits.CompImageHDU)
    assert raw[1]._bintable.header["ZCMPTYPE"] == compress
    bintable = fits.open(
        io.BytesIO(tools.read_bytes(repo, "packed", n=1)), disable_image_compression=True
    )
    assert isinstance(bintable[1], fits.BinTableHDU)
    assert bintable[1].header["ZIMAGE"] is True


def test_compressed_floats_are_quantized_by_default(repo: Butler) -> None:
    repo.register_dataset_type(
        "lossy", "numpy.ndarray", "fits", "lossy.fits", serializer_args={"compress": "RICE_1"}
    )
    rng = np.random.default_rng(1)
    image = rng.normal(100, 10, size=(32, 32)).astype("<f4")
    repo.put(image, "lossy")
    got = repo.get("lossy")
    assert got.dtype.str == "<f4"
    assert not np.array_equal(got, image)  # RICE on floats quantizes...
    np.testing.assert_allclose(got, image, atol=10)  # ...to a fraction of the noise


def test_bad_serializer_args(repo: Butler) -> None:
    repo.register_dataset_type(
        "bad", "numpy.ndarray", "fits", "bad.fits", serializer_args={"compress": "NOPE_9"}
    )
    with pytest.raises(FormatError, match=r"'bad'.*compress='NOPE_9' is not one of"):
        repo.put(np.zeros((4, 4), "i4"), "bad")
    assert not repo.exists("bad")
    repo.register_dataset_type(
        "bad2", "numpy.ndarray", "fits", "bad2.fits", serializer_args={"checksum": "yes"}
    )
    with pytest.raises(FormatError, match=r"'bad2'.*checksum='yes' is not a bool"):
        repo.put(np.zeros(2), "bad2")


def test_gzipped_file(repo: Butler, tools) -> None:
    repo.register_dataset_type("gz", "numpy.ndarray", "fits", "gz/{n}.fits.gz")
    array = _sample(">f8", (10, 10))
    repo.put(array, "gz", n=1)
    raw = tools.read_bytes(repo, "gz", n=1)
    assert raw[:2] == b"\x1f\x8b"
    _same(repo.get("gz", n=1), array)
    _same(repo.get("gz", n=1, parameters={"section": (slice(2, 4),)}), array[2:4])
