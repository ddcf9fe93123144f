"""A short, real butler session on local disk: FITS, HDF5 and JSON datasets in one repository.

Run: ``python examples/quickstart.py [REPO_DIR]`` (default ``./demo-repo``).
"""

from __future__ import annotations

import dataclasses
import sys
import time

import numpy as np

import butler


@dataclasses.dataclass
class Calibration:
    gain: float
    read_noise: float
    detector: str


def main(root: str) -> None:
    b = butler.Butler.create(root)
    formats = butler.default_registry().formats
    image_format = "fits" if "fits" in formats else "npy"
    b.register_dataset_type(
        "calexp",
        "numpy.ndarray",
        image_format,
        template="calexp/{visit:06d}/{ccd:d}" + formats[image_format].extension,
    )
    b.register_dataset_type("calib", Calibration, "json", template="calib/{ccd:d}.json")
    if "hdf5" in formats:
        b.register_dataset_type("catalog", dict, "hdf5", template="catalog/{visit:06d}.h5")

    rng = np.random.default_rng(42)
    start = time.perf_counter()
    for visit in (1, 2):
        for ccd in range(4):
            image = rng.normal(1000.0, 5.0, size=(1024, 1024)).astype(np.float32)
            b.put(image, "calexp", visit=visit, ccd=ccd, overwrite=True)
        if "hdf5" in formats:
            catalog = {
                "ra": rng.uniform(0, 360, 10_000),
                "dec": rng.uniform(-90, 90, 10_000),
                "meta": {"visit": visit, "band": "r"},
            }
            b.put(catalog, "catalog", visit=visit, overwrite=True)
    for ccd in range(4):
        b.put(Calibration(1.5 + ccd / 10, 4.2, f"R22_S{ccd}"), "calib", ccd=ccd, overwrite=True)
    elapsed = time.perf_counter() - start

    full = b.get("calexp", visit=1, ccd=2)
    parameters = (
        {"section": (slice(100, 200), slice(300, 400))}
        if image_format == "fits"
        else {"slice": (slice(100, 200), slice(300, 400))}
    )
    cutout = b.get("calexp", visit=1, ccd=2, parameters=parameters)
    assert np.array_equal(cutout, full[100:200, 300:400])
    calib = b.get("calib", ccd=3)
    assert isinstance(calib, Calibration) and calib.detector == "R22_S3"

    print(f"repository      : {b.storage.uri()} ({b.storage.type_name})")
    print(f"formats in use  : {sorted({dt.format for dt in b.dataset_types.values()})}")
    print(
        "wrote           : 8 images of 4 MiB, 4 calibrations"
        + (", 2 catalogs" if "hdf5" in formats else "")
        + f" in {elapsed:.2f} s"
    )
    print(f"calexp datasets : {sorted((d['visit'], d['ccd']) for d in b.datasets('calexp'))}")
    print(f"cutout          : {cutout.shape} {cutout.dtype}, mean {cutout.mean():.1f}")
    print(f"calibration     : {calib}")
    report = b.verify()
    print(f"verify          : {report.checked} datasets checked, healthy={report.healthy}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "./demo-repo")
