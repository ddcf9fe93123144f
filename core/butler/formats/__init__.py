"""The formats shipped with butler-core: ``json``, ``pickle``, ``npy`` and ``config``.

One module per format, named after the format (``npy``, ``config``); ``json_`` and ``pickle_``
end in ``_`` because their plain names are the standard-library modules they wrap.
Each module is imported only when a dataset of its format is read or written.
"""
