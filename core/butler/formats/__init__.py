"""The formats shipped with butler-core: ``json``, ``pickle``, ``npy`` and ``config``.

Each module is imported only when a dataset of its format is read or written.
"""
