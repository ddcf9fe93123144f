"""``butler get REPO calexp.wcs`` writes one component; ``butler info`` lists components."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from butler import Butler

fits = pytest.importorskip("astropy.io.fits")


@pytest.fixture
def calexp_repo(butler_repo: Callable[..., Butler]) -> Path:
    from astropy.nddata import CCDData
    from astropy.wcs import WCS

    b = butler_repo("posix")
    b.register_dataset_type("calexp", "astropy.nddata.CCDData", "fits", dimensions={"visit": int})
    b.register_dataset_type(
        "calexp_d",
        "astropy.nddata.CCDData",
        "fits",
        dimensions={"visit": int},
        disassemble=True,
        component_formats={"meta": "json", "unit": "json"},
    )
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [33.0, -4.0]
    ccd = CCDData(np.arange(12.0).reshape(3, 4), unit="adu", wcs=w, mask=np.eye(3, 4, dtype=bool))
    b.put(ccd, "calexp", visit=1)
    b.put(ccd, "calexp_d", visit=1)
    return Path(b.storage.root)


def test_get_writes_one_component(
    cli: Callable[..., Any], calexp_repo: Path, tmp_path: Path
) -> None:
    out = tmp_path / "wcs.fits"
    result = cli("get", calexp_repo, "calexp.wcs", "--id", "visit=1", "-o", out)
    assert result.exit_code == 0, result.output + result.stderr
    header = fits.getheader(out)
    assert (header["CTYPE1"], header["CRVAL1"]) == ("RA---TAN", 33.0)
    mask = tmp_path / "mask.npy"
    result = cli("get", calexp_repo, "calexp_d.mask", "--id", "visit=1", "-o", mask)
    assert result.exit_code == 0, result.output + result.stderr
    np.testing.assert_array_equal(np.load(mask), np.eye(3, 4, dtype=bool))


def test_get_of_an_unknown_component_names_the_ones_that_exist(
    cli: Callable[..., Any], calexp_repo: Path, tmp_path: Path
) -> None:
    result = cli("get", calexp_repo, "calexp.psf", "--id", "visit=1", "-o", tmp_path / "x.fits")
    assert result.exit_code != 0
    assert "has no component 'psf'" in result.stderr
    assert "['data', 'header', 'mask', 'meta', 'uncertainty', 'unit', 'wcs']" in result.stderr
    assert not (tmp_path / "x.fits").exists()


def test_info_lists_components(cli: Callable[..., Any], cli_json: Callable[..., Any],
                               calexp_repo: Path) -> None:  # fmt: skip
    data = cli_json("info", calexp_repo)
    calexp = data["dataset_types"]["calexp"]
    names = ["data", "header", "mask", "meta", "uncertainty", "unit", "wcs"]
    assert calexp["components"] == names and calexp["direct"] == names
    assert calexp["disassembled"] is False
    assert data["dataset_types"]["calexp_d"]["disassembled"] is True
    text = cli("info", calexp_repo).stdout
    assert "components (* read directly): data*, header*, mask*" in text
    assert "components (disassembled): data*" in text


def test_verify_lists_unreferenced_parts_and_purge_removes_them(
    cli: Callable[..., Any], cli_json: Callable[..., Any], calexp_repo: Path
) -> None:
    b = Butler(str(calexp_repo))
    stray = "@parts/calexp_d/1.composite.json/0123456789abcdef/wcs.fits"
    b.storage.write_bytes(stray, b"SIMPLE  =", metadata={"created": 0.0})
    result = cli("verify", calexp_repo)
    assert result.exit_code == 0, result.output + result.stderr  # debris is not damage
    assert "wcs.fits: part of no composite (purge_debris removes it)" in result.stdout
    assert "removed by `butler purge" in result.stdout
    assert len(cli_json("verify", calexp_repo)["unreferenced"]) == 1
    purged = cli_json("purge", calexp_repo, "--older-than", "60")
    assert any("0123456789abcdef/wcs.fits" in item for item in str(purged).split(","))
    assert cli_json("verify", calexp_repo)["unreferenced"] == []
    b.close()


def test_convert_refuses_a_composite_record_and_says_how_to_export_it(
    cli: Callable[..., Any], calexp_repo: Path, tmp_path: Path
) -> None:
    """A composite record is not a file of its own: its parts live in its repository."""
    record = calexp_repo / "calexp_d" / "1.composite.json"
    assert record.exists()
    result = cli("convert", record, tmp_path / "out.fits")
    assert result.exit_code != 0
    assert "the record of a disassembled composite" in result.stderr
    assert "butler get REPO DATASET_TYPE --id ... -o FILE" in result.stderr
    assert not (tmp_path / "out.fits").exists()
    # What the error says works: the dataset, assembled, as one file.
    result = cli("get", calexp_repo, "calexp_d", "--id", "visit=1", "-o", tmp_path / "out.fits")
    assert result.exit_code == 0, result.output + result.stderr
    from astropy.nddata import CCDData

    back = CCDData.read(tmp_path / "out.fits")
    np.testing.assert_array_equal(back.data, np.arange(12.0).reshape(3, 4))
    np.testing.assert_array_equal(back.mask, np.eye(3, 4, dtype=bool))
    assert back.wcs.wcs.crval[0] == 33.0
    plain = tmp_path / "x.json"
    plain.write_text('{"a": 1}')
    result = cli("convert", plain, tmp_path / "x.composite.json")
    assert result.exit_code != 0 and "the record of a disassembled composite" in result.stderr
