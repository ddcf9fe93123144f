"""butler.dask on real Dask worker processes."""
