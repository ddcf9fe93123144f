"""The storages shipped with butler-core: ``posix`` (local disk) and ``memory``."""
