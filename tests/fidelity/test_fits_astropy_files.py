"""Every FITS file shipped in astropy's installed package, through butler, against astropy.

For each file astropy opens, butler must give what astropy gives, or refuse with a
`ButlerError` that says what it cannot represent (not a wrapped library exception):

* ``read_file`` as `~astropy.io.fits.HDUList`: every HDU's type, header cards and data;
* ``read_file`` as the format's default type (`numpy.ndarray`): the first image astropy
  finds, with its dtype; files without one are refused naming what to ask for instead;
* ``read_file`` as `~astropy.table.Table` (files with a table): what ``Table.read`` gives;
* put/get as HDUList through a posix repository and an S3 (moto) repository.

The last test prints the counts (run with ``-s`` to see them).
"""

from __future__ import annotations

import copy
import glob
import os
import re
import uuid
import warnings
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

astropy = pytest.importorskip("astropy")
from astropy.io import fits  # noqa: E402
from astropy.table import Table  # noqa: E402

import butler  # noqa: E402
from butler import Butler, ButlerError  # noqa: E402

ROOT = Path(astropy.__file__).parent
PATTERNS = ("*.fits", "*.fits.*", "*.fit", "*.fit.*", "*.fts", "*.fts.*", "*.fz")
FILES = sorted(
    {
        os.path.relpath(path, ROOT)
        for pattern in PATTERNS
        for path in glob.glob(str(ROOT / "**" / pattern), recursive=True)
    }
)
#: A refusal is a sentence of butler's, not a library's exception passed through.
WRAPPED = re.compile(r"as 'fits': \w+(Error|Exception)\b")

TALLY: Counter[str] = Counter()
REFUSED: dict[str, str] = {}
UNOPENED: set[str] = set()


def _astropy_opens(name: str) -> bool:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with fits.open(ROOT / name) as hdul:
                hdul.readall()
        return True
    except Exception:  # what astropy cannot open is out of scope (counted apart)
        return False


@pytest.fixture(autouse=True)
def _quiet() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


@pytest.fixture(params=FILES, ids=FILES)
def name(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    if not _astropy_opens(name):
        UNOPENED.add(name)
        pytest.skip(f"astropy itself cannot open {name}")
    return name


def _refused(exc: ButlerError, name: str, what: str) -> None:
    message = str(exc)
    assert not WRAPPED.search(message), f"unclear refusal of {name} as {what}: {message}"
    TALLY[f"refused ({what})"] += 1
    REFUSED[f"{name} as {what}"] = message.split(": ", 1)[-1][:200]


# -- comparisons --------------------------------------------------------------------------


def _same_array(got: Any, want: Any) -> bool:
    got, want = np.asarray(got), np.asarray(want)
    if got.shape != want.shape or got.dtype != want.dtype:
        return False
    if got.dtype == object:  # variable-length cells
        return all(_same_array(g, w) for g, w in zip(got.ravel(), want.ravel(), strict=True))
    if got.dtype.kind in "fc":
        return bool(np.array_equal(got, want, equal_nan=True))
    return bool(np.array_equal(got, want))


def _cards(header: fits.Header) -> list[Any]:
    cards: list[Any] = []
    for card in header.cards:
        card = copy.copy(card)  # reading a bad card's value changes the card
        try:
            cards.append((card.keyword, card.value, card.comment))
        except fits.VerifyError:  # unparsable as astropy reads it: compare its text
            cards.append(card._image)
    return cards


def _assert_same_hdul(got: fits.HDUList, want: fits.HDUList, *, cards: bool = True) -> None:
    assert [type(h).__name__ for h in got] == [type(h).__name__ for h in want]
    for index, (g, w) in enumerate(zip(got, want, strict=True)):
        if cards:
            assert _cards(g.header) == _cards(w.header), f"HDU {index} header"
        if isinstance(w, fits.BinTableHDU | fits.TableHDU | fits.GroupsHDU) and (
            w.data is not None
        ):
            assert g.columns.names == w.columns.names, f"HDU {index} columns"
            assert [c.unit for c in g.columns] == [c.unit for c in w.columns]
            for col in w.columns.names:
                assert _same_array(g.data[col], w.data[col]), f"HDU {index} column {col}"
        elif w.data is None or not hasattr(w.data, "dtype"):
            assert g.data is None or np.asarray(g.data).size == np.asarray(w.data).size
        else:
            assert _same_array(g.data, w.data), f"HDU {index} data"


def _first_image(hdul: fits.HDUList) -> Any:
    for hdu in hdul:
        if isinstance(hdu, fits.PrimaryHDU | fits.ImageHDU | fits.CompImageHDU) and (
            hdu.header.get("NAXIS", 0) > 0 or getattr(hdu, "_bintable", None) is not None
        ):
            return hdu
    return None


def _first_table(hdul: fits.HDUList) -> int | None:
    for index, hdu in enumerate(hdul):
        if isinstance(hdu, fits.BinTableHDU | fits.TableHDU) and not isinstance(
            hdu, fits.CompImageHDU
        ):
            return index
    return None


# -- reads ---------------------------------------------------------------------------------


def test_read_file_as_hdulist(name: str) -> None:
    TALLY["files tried"] += 1
    try:
        got = butler.read_file(str(ROOT / name), python_type=fits.HDUList)
    except ButlerError as exc:
        _refused(exc, name, "HDUList")
        return
    with fits.open(ROOT / name) as want:
        for hdu in want:  # butler returns the data loaded (scaled images update BITPIX)
            _ = hdu.data
        _assert_same_hdul(got, want)
    TALLY["read equal (HDUList)"] += 1


def test_read_file_as_default_type(name: str) -> None:
    with fits.open(ROOT / name) as hdul:
        image = _first_image(hdul)
        try:
            got = butler.read_file(str(ROOT / name))
        except ButlerError as exc:
            if image is not None and not isinstance(image, fits.GroupsHDU):
                raise
            _refused(exc, name, "numpy.ndarray")
            return
        assert image is not None, f"{name} has no image, butler returned {got!r}"
        assert not isinstance(image, fits.GroupsHDU), "random groups read as an image"
        assert isinstance(got, np.ndarray)
        assert _same_array(got, image.data)
    TALLY["read equal (numpy.ndarray)"] += 1


def test_read_file_as_table(name: str) -> None:
    with fits.open(ROOT / name) as hdul:
        index = _first_table(hdul)
    if index is None:
        pytest.skip("no table HDU")
    try:
        want = Table.read(ROOT / name, hdu=index)
    except Exception:
        want = None
    try:
        got = butler.read_file(str(ROOT / name), python_type=Table)
    except ButlerError as exc:
        assert want is None, f"Table.read reads {name} but butler refuses: {exc}"
        _refused(exc, name, "Table")
        return
    assert want is not None
    assert got.colnames == want.colnames
    for col in want.colnames:
        g, w = got[col], want[col]
        assert type(g) is type(w) and g.dtype == w.dtype and g.unit == w.unit, col
        assert _same_array(np.ma.getmaskarray(g), np.ma.getmaskarray(w)), col
        assert _same_array(np.ma.getdata(g), np.ma.getdata(w)), col
    assert list(got.meta.items()) == list(want.meta.items())
    TALLY["read equal (Table)"] += 1


# -- round trips ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def posix_repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Butler]:
    with Butler.create(str(tmp_path_factory.mktemp("fidelity") / "repo")) as repo:
        repo.register_dataset_type(
            "file", python_type=fits.HDUList, format="fits", template="f/{key}"
        )
        yield repo


@pytest.fixture(scope="module")
def s3_module_repo(s3_endpoint: str) -> Iterator[Butler]:
    import boto3

    from tests.conftest import S3_KEY, S3_SECRET

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AWS_ACCESS_KEY_ID", S3_KEY)
        patch.setenv("AWS_SECRET_ACCESS_KEY", S3_SECRET)
        patch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        bucket = f"butler-{uuid.uuid4().hex[:12]}"
        client = boto3.client(
            "s3",
            endpoint_url=s3_endpoint,
            aws_access_key_id=S3_KEY,
            aws_secret_access_key=S3_SECRET,
            region_name="us-east-1",
        )
        client.create_bucket(Bucket=bucket)
        options = {"endpoint_url": s3_endpoint, "key": S3_KEY, "secret": S3_SECRET}
        repo = Butler.create(f"s3://{bucket}/repo", **options)
        repo.register_dataset_type(
            "file", python_type=fits.HDUList, format="fits", template="f/{key}"
        )
        yield repo
        repo.close()
        objects = client.list_objects_v2(Bucket=bucket).get("Contents", [])
        for item in objects:
            client.delete_object(Bucket=bucket, Key=item["Key"])
        client.delete_bucket(Bucket=bucket)


def _round_trip(repo: Butler, name: str, storage: str) -> None:
    """Put/get as HDUList gives what astropy gives when it writes the file and reads it
    back (``writeto`` normalises some cards and byte orders the same way)."""
    import io

    key = re.sub(r"[^A-Za-z0-9]+", "-", name)
    with fits.open(ROOT / name) as given:
        given.readall()
        before = [_cards(hdu.header) for hdu in given]
        try:
            repo.put(given, "file", key=key)
        except ButlerError as exc:
            _refused(exc, name, f"put on {storage}")
            return
        finally:
            assert [_cards(hdu.header) for hdu in given] == before, "put changed its input"
        got = repo.get("file", key=key)
    buffer = io.BytesIO()
    with fits.open(ROOT / name) as again:
        again.writeto(buffer)
    buffer.seek(0)
    with fits.open(buffer) as want:
        _assert_same_hdul(got, want)
    TALLY[f"round trip equal ({storage})"] += 1


def test_round_trip_posix(name: str, posix_repo: Butler) -> None:
    _round_trip(posix_repo, name, "posix")


@pytest.mark.slow
def test_round_trip_s3(name: str, s3_module_repo: Butler) -> None:
    _round_trip(s3_module_repo, name, "s3")


def test_zz_counts() -> None:
    """Print the tally (``pytest -s``): files tried, equal reads and round trips, refusals."""
    print("\nFITS files shipped with astropy, through butler:")
    print(f"  found: {len(FILES)}; astropy cannot open: {sorted(UNOPENED)}")
    for label, count in sorted(TALLY.items()):
        print(f"  {label}: {count}")
    for what, message in sorted(REFUSED.items()):
        print(f"  refused: {what}: {message}")
