"""Read parameters: ``slice`` and ``fields`` read only the selected part of a dataset."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

pytest.importorskip("butler_hdf5", reason="butler-hdf5 is not installed")
h5py = pytest.importorskip("h5py")

from butler import Butler, FormatError  # noqa: E402

CUBE = np.arange(7 * 11 * 5, dtype=">f4").reshape(7, 11, 5)

SELECTIONS = [
    (slice(2, 5),),
    (slice(None), slice(3, 9, 2)),
    (slice(1, 6), slice(None), slice(4, 5)),
    (slice(None, None, -1),),
    (slice(5, 1, -2), slice(10, None, -3)),
    (slice(3, 3),),
    (slice(-3, None), slice(-20, 20)),
    (2,),
    (2, slice(1, 4), -1),
    (Ellipsis, 3),
    (1, Ellipsis),
    (slice(0, 6), [4, 0, 9, 4]),
    (np.array([6, 0, 3]),),
    (0, slice(None), [4, 2]),  # numpy's rule: the combined indices' axis comes first
    slice(1, 3),
    -1,
    (),
]


@pytest.fixture
def cube_repo(repo: Butler) -> Butler:
    repo.register_dataset_type(
        "cube",
        "numpy.ndarray",
        "hdf5",
        dimensions={"i": int},
        serializer_args={"chunks": (2, 4, 5), "compression": "gzip"},
    )
    repo.put(CUBE, "cube", i=1)
    return repo


@pytest.mark.parametrize("selection", SELECTIONS, ids=repr)
def test_slice_equals_slice_of_full_read(cube_repo: Butler, selection: Any) -> None:
    full = cube_repo.get("cube", i=1)
    part = cube_repo.get("cube", i=1, parameters={"slice": selection})
    expected = np.asarray(full[selection])  # a single element comes back as a 0-d array
    assert part.dtype == expected.dtype == np.dtype(">f4")
    assert part.shape == expected.shape
    assert np.array_equal(part, expected)


def test_slice_reads_only_the_selected_chunks(posix_repo: Butler) -> None:
    """A slice touching one chunk must not read (decompress) the others."""
    posix_repo.register_dataset_type(
        "big",
        "numpy.ndarray",
        "hdf5",
        dimensions={"i": int},
        serializer_args={"chunks": (100, 100), "compression": "gzip"},
    )
    values = np.arange(1000 * 1000, dtype="f8").reshape(1000, 1000)
    posix_repo.put(values, "big", i=1)
    path = f"{posix_repo.storage.root}/{posix_repo.location('big', i=1).key}"
    # Corrupt every chunk but the first one: reading the slice still works only if h5py
    # reads just that chunk from the file.
    with h5py.File(path, "r") as f:
        dataset = f["data"]
        offsets = [
            dataset.id.get_chunk_info(i).byte_offset for i in range(dataset.id.get_num_chunks())
        ]
        first = dataset.id.get_chunk_info_by_coord((0, 0)).byte_offset
    with open(path, "r+b") as raw:
        for offset in offsets:
            if offset != first:
                raw.seek(offset)
                raw.write(b"\xff" * 64)
    part = posix_repo.get("big", i=1, parameters={"slice": (slice(10, 20), slice(0, 100))})
    assert np.array_equal(part, values[10:20, :100])
    with pytest.raises(FormatError, match=r"'big'"):
        posix_repo.get("big", i=1)  # the full read does hit a corrupt chunk


def test_bad_selection_is_a_format_error_naming_the_dataset(cube_repo: Butler) -> None:
    with pytest.raises(FormatError, match=r"'cube'.*out of bounds"):
        cube_repo.get("cube", i=1, parameters={"slice": (7,)})
    with pytest.raises(FormatError, match=r"'cube'.*too many indices"):
        cube_repo.get("cube", i=1, parameters={"slice": (0, 0, 0, 0)})


RECORDS = np.zeros(50, dtype=[("id", "<i4"), ("name", "U5"), ("flux", ">f8", (3,))])
RECORDS["id"] = np.arange(50)
RECORDS["name"] = [f"é{i}" for i in range(50)]
RECORDS["flux"] = np.arange(150.0).reshape(50, 3)


@pytest.fixture
def table_repo(repo: Butler) -> Butler:
    repo.register_dataset_type("rec", "numpy.ndarray", "hdf5", dimensions={"i": int})
    repo.put(RECORDS, "rec", i=1)
    return repo


@pytest.mark.parametrize("fields", ["name", "flux", ["flux", "id"], ["name"]], ids=repr)
@pytest.mark.parametrize("selection", [None, (slice(5, 40, 3),), (7,)], ids=repr)
def test_fields(table_repo: Butler, fields: Any, selection: Any) -> None:
    parameters: dict[str, Any] = {"fields": fields}
    if selection is not None:
        parameters["slice"] = selection
    part = table_repo.get("rec", i=1, parameters=parameters)
    full = table_repo.get("rec", i=1)
    expected = np.asarray(full[fields] if selection is None else full[selection][fields])
    if isinstance(fields, str):
        assert part.dtype == RECORDS.dtype[fields].base
        assert np.array_equal(part, expected)
    else:
        assert part.dtype.names == tuple(fields)
        for name in fields:
            assert part[name].dtype == RECORDS[name].dtype
            assert np.array_equal(part[name], expected[name])


def test_unknown_field(table_repo: Butler) -> None:
    with pytest.raises(
        FormatError, match=r"'rec'.*no field\(s\) \['nope'\].*\['id', 'name', 'flux'\]"
    ):
        table_repo.get("rec", i=1, parameters={"fields": ["id", "nope"]})
