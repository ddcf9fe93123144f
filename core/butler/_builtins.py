"""butler-core's own storages, formats and serializers, declared through the plugin hooks."""

from __future__ import annotations

from ._components import Components
from ._declarations import FormatDescriptor, Serializer, StorageSpec
from .hookspecs import hookimpl

_JSON_TYPES = (
    "builtins.dict",
    "builtins.list",
    "builtins.str",
    "builtins.int",
    "builtins.float",
    "builtins.bool",
    "types.NoneType",
    "butler._abc.DataclassLike",
)
_CONFIG_TYPES = ("butler._config.Config", "butler._abc.DataclassLike", "builtins.dict")


@hookimpl
def butler_storages() -> list[StorageSpec]:
    return [
        StorageSpec(
            "posix",
            ("file",),
            "butler.storages.posix:PosixStorage",
            "Local disk: atomic rename + fsync, metadata in extended attributes",
        ),
        StorageSpec(
            "memory",
            ("memory",),
            "butler.storages.memory:MemoryStorage",
            "In-process memory shared by every Butler in the process",
        ),
    ]


@hookimpl
def butler_formats() -> list[FormatDescriptor]:
    return [
        FormatDescriptor(
            "composite",
            (".composite.json",),
            description="Record of a disassembled composite: one dataset per component",
            python_type="builtins.object",
        ),
        FormatDescriptor(
            "config",
            (".yaml", ".yml"),
            description="YAML config recording its subclass",
            python_type="builtins.dict",
            parameters=frozenset(),
            serializer_args=frozenset(),
        ),
        FormatDescriptor(
            "json",
            (".json",),
            description="JSON (dicts, lists, dataclasses)",
            python_type="builtins.dict",
            parameters=frozenset(),
            serializer_args=frozenset({"indent"}),
        ),
        FormatDescriptor(
            "npy",
            (".npy",),
            magic=b"\x93NUMPY",
            description="NumPy array, never pickled",
            python_type="numpy.ndarray",
            parameters=frozenset({"slice"}),
            serializer_args=frozenset(),
        ),
        FormatDescriptor(
            "pickle",
            (".pickle", ".pkl"),
            description="Python pickle; reading requires allow_pickle=True",
            parameters=frozenset(),
            serializer_args=frozenset({"protocol"}),
        ),
    ]


def _pair(module: str) -> tuple[str, str]:
    return f"butler.formats.{module}:write", f"butler.formats.{module}:read"


@hookimpl
def butler_serializers() -> list[Serializer]:
    json_decode = "butler.formats.json_:decode"
    specs = [
        Serializer(t, "*", "json", *_pair("json_"), decode_ref=json_decode) for t in _JSON_TYPES
    ]
    specs += [Serializer(t, "*", "config", *_pair("config")) for t in _CONFIG_TYPES]
    specs.append(Serializer("builtins.object", "*", "pickle", *_pair("pickle_")))
    specs.append(Serializer("numpy.ndarray", "*", "npy", *_pair("npy")))
    specs.append(
        Serializer(
            "builtins.object", "*", "composite", "butler._composite:write", "butler._composite:read"
        )
    )
    return specs


_CORE = "butler._core_components"


@hookimpl
def butler_components() -> list[Components]:
    return [
        Components(
            "butler._abc.DataclassLike",
            f"{_CORE}:dataclass_fields",
            f"{_CORE}:split_dataclass",
            f"{_CORE}:assemble_dataclass",
        ),
        # Dicts (of arrays, of configs...): each string key is a component.
        Components(
            "builtins.dict",
            {},
            f"{_CORE}:split_mapping",
            f"{_CORE}:assemble_mapping",
            dynamic=True,
            extract=f"{_CORE}:extract_mapping",
        ),
    ]
