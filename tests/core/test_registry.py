"""The (type, storage, format) registry: lookup order, duplicates, laziness, errors."""

from __future__ import annotations

import collections
import dataclasses
import subprocess
import sys
import textwrap
import threading
from collections.abc import Mapping, MutableMapping

import pytest

from butler import DuplicateSerializerError, NoSerializerError, Registry


def w_base(obj, location):  # pragma: no cover - identity matters, not behaviour
    pass


def r_base(location):  # pragma: no cover
    pass


def w_other(obj, location):  # pragma: no cover
    pass


def r_other(location):  # pragma: no cover
    pass


class Base:
    pass


class Child(Base):
    pass


class GrandChild(Child):
    pass


def test_mro_fallback_through_user_subclass() -> None:
    reg = Registry()
    reg.register(Base, "*", "json", w_base, r_base)
    found = reg.find(GrandChild, "posix", "json")
    assert found.write is w_base and found.python_type.endswith("test_registry.Base")


def test_most_derived_class_wins() -> None:
    reg = Registry()
    reg.register(Base, "*", "json", w_base, r_base)
    reg.register(Child, "*", "json", w_other, r_other)
    assert reg.find(GrandChild, "posix", "json").write is w_other
    assert reg.find(Base, "posix", "json").write is w_base


def test_dict_found_through_mapping_abc() -> None:
    reg = Registry()
    reg.register(Mapping, "*", "json", w_base, r_base)
    assert reg.find(dict, "memory", "json").write is w_base
    assert reg.find(collections.OrderedDict, "memory", "json").write is w_base


def test_abc_order_follows_singledispatch() -> None:
    reg = Registry()
    reg.register(Mapping, "*", "json", w_base, r_base)
    reg.register(MutableMapping, "*", "json", w_other, r_other)
    # dict is a MutableMapping, which is more derived than Mapping.
    assert reg.find(dict, "posix", "json").write is w_other


def test_exact_storage_beats_any_storage_at_same_level() -> None:
    reg = Registry()
    reg.register(Base, "*", "fits", w_base, r_base)
    reg.register(Base, "posix", "fits", w_other, r_other)
    assert reg.find(Base, "posix", "fits").write is w_other
    assert reg.find(Base, "s3", "fits").write is w_base


def test_more_derived_any_storage_beats_base_exact_storage() -> None:
    reg = Registry()
    reg.register(Base, "posix", "fits", w_base, r_base)
    reg.register(Child, "*", "fits", w_other, r_other)
    assert reg.find(Child, "posix", "fits").write is w_other


def test_duplicate_raises_and_names_the_key() -> None:
    reg = Registry()
    reg.register(Base, "*", "json", w_base, r_base)
    with pytest.raises(DuplicateSerializerError) as info:
        reg.register(Base, "*", "json", w_other, r_other)
    message = str(info.value)
    assert "json" in message and "Base" in message and "overwrite=True" in message


def test_identical_registration_is_a_no_op() -> None:
    reg = Registry()
    first = reg.register(Base, "*", "json", w_base, r_base)
    again = reg.register(Base, "*", "json", w_base, r_base)
    assert again is first
    # Same strings are identical too (re-importing a module that registers by string).
    reg.register("x.Y", "*", "json", "m:w", "m:r")
    reg.register("x.Y", "*", "json", "m:w", "m:r")


def test_overwrite_replaces_and_clears_cache() -> None:
    reg = Registry()
    reg.register(Base, "*", "json", w_base, r_base)
    assert reg.find(Child, "posix", "json").write is w_base  # now cached
    reg.register(Base, "*", "json", w_other, r_other, overwrite=True)
    assert reg.find(Child, "posix", "json").write is w_other


def test_new_registration_clears_cache() -> None:
    reg = Registry()
    reg.register(Base, "*", "json", w_base, r_base)
    assert reg.find(Child, "posix", "json").write is w_base
    reg.register(Child, "*", "json", w_other, r_other)
    assert reg.find(Child, "posix", "json").write is w_other


def test_miss_names_type_format_storage_and_what_exists() -> None:
    reg = Registry()
    reg.register(Base, "*", "json", w_base, r_base)
    reg.register(Base, "posix", "npy", w_base, r_base)
    with pytest.raises(NoSerializerError) as info:
        reg.find(Child, "posix", "fits")
    message = str(info.value)
    assert "test_registry.Child" in message
    assert "'fits'" in message and "'posix'" in message
    assert "json" in message and "npy" in message  # what is registered
    assert "butler-fits" in message  # what to install


def test_miss_hints_the_storage_distribution() -> None:
    reg = Registry()
    reg.register(Base, "*", "json", w_base, r_base)
    with pytest.raises(NoSerializerError, match="butler-db"):
        reg.find(Base, "database", "sql-table")


def test_miss_for_unrelated_type_says_nothing_is_registered() -> None:
    reg = Registry()
    with pytest.raises(NoSerializerError, match="Nothing is registered"):
        reg.find(int, "posix", "json")


def test_string_type_matches_once_module_is_loaded() -> None:
    reg = Registry()
    reg.register("decimal.Decimal", "*", "json", w_base, r_base)
    import decimal

    assert reg.find(decimal.Decimal, "posix", "json").write is w_base


def test_string_alias_of_a_class_matches() -> None:
    # "collections.OrderedDict" is defined in module "collections" and matches by identity.
    reg = Registry()
    reg.register("collections.OrderedDict", "*", "json", w_base, r_base)
    assert reg.find(collections.OrderedDict, "posix", "json").write is w_base


def test_string_callables_resolved_on_first_use() -> None:
    reg = Registry()
    entry = reg.register(Base, "*", "json", "json:dumps", "json:loads")
    import json

    assert entry.write is json.dumps and entry.read is json.loads


def test_bad_string_callable_is_a_plugin_error() -> None:
    from butler import PluginError

    reg = Registry()
    entry = reg.register(Base, "*", "json", "no_such_module_xyz:write", "json:loads")
    with pytest.raises(PluginError, match="no_such_module_xyz"):
        entry.write  # noqa: B018


def test_registering_strings_imports_nothing(tmp_path) -> None:
    """A string type and string callables stay unimported until an object needs them."""
    pkg = tmp_path / "lazy_pkg_butler"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "types_.py").write_text("class Thing:\n    pass\n")
    (pkg / "io_.py").write_text(
        "def write(obj, location):\n    pass\n\ndef read(location):\n    return 1\n"
    )
    code = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(tmp_path)!r})
        from butler import Registry
        reg = Registry()
        reg.register("lazy_pkg_butler.types_.Thing", "*", "x", "lazy_pkg_butler.io_:write",
                     "lazy_pkg_butler.io_:read")
        try:
            reg.find(int, "posix", "x")
        except Exception:
            pass
        assert "lazy_pkg_butler" not in sys.modules, "registration imported the package"
        from lazy_pkg_butler.types_ import Thing
        entry = reg.find(Thing, "posix", "x")
        assert "lazy_pkg_butler.io_" not in sys.modules, "lookup imported the callables"
        entry.write
        assert "lazy_pkg_butler.io_" in sys.modules
        print("OK")
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "OK"


def test_cache_notices_abc_module_loaded_later(tmp_path) -> None:
    """A string-registered ABC whose module loads after a cached lookup takes effect."""
    (tmp_path / "late_abc_butler.py").write_text(
        "from abc import ABC\n"
        "class HasShape(ABC):\n"
        "    @classmethod\n"
        "    def __subclasshook__(cls, sub):\n"
        "        return hasattr(sub, 'shape') or NotImplemented\n"
    )
    sys.path.insert(0, str(tmp_path))
    try:

        class Shaped:
            shape = (1,)

        reg = Registry()
        reg.register(object, "*", "x", w_base, r_base)
        reg.register("late_abc_butler.HasShape", "*", "x", w_other, r_other)
        assert reg.find(Shaped, "posix", "x").write is w_base  # ABC not loadable yet
        import late_abc_butler  # noqa: F401

        assert reg.find(Shaped, "posix", "x").write is w_other
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("late_abc_butler", None)


def test_registry_is_thread_safe() -> None:
    reg = Registry()
    classes = [type(f"T{i}", (Base,), {}) for i in range(200)]
    errors: list[BaseException] = []

    def register(chunk: list[type]) -> None:
        try:
            for cls in chunk:
                reg.register(cls, "*", "json", w_base, r_base)
                assert reg.find(cls, "posix", "json").write is w_base
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=register, args=(classes[i::8],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(reg.serializers) == 200


def test_serializers_view_is_read_only() -> None:
    reg = Registry()
    reg.register(Base, "*", "json", w_base, r_base)
    view = reg.serializers
    with pytest.raises(TypeError):
        view[("a", "b", "c")] = None  # type: ignore[index]


def test_register_validates_arguments() -> None:
    reg = Registry()
    with pytest.raises(TypeError, match="storage"):
        reg.register(Base, "", "json", w_base, r_base)
    with pytest.raises(TypeError, match="write"):
        reg.register(Base, "*", "json", 42, r_base)


def test_identify_format_by_magic_then_extension() -> None:
    from butler import default_registry

    reg = default_registry()
    assert reg.identify_format("x.bin", b"\x93NUMPY\x01\x00") == "npy"
    assert reg.identify_format("data.json", b"{") == "json"
    from butler import FormatError

    with pytest.raises(FormatError, match="cannot identify"):
        reg.identify_format("data.unknown", b"???")


# -- issue 14 item 7: keys in register's order, add(), duplicate storages/formats ---------


def test_find_takes_the_keys_in_register_order() -> None:
    reg = Registry()
    reg.register(Base, "posix", "json", w_other, r_other)
    reg.register(Base, "*", "json", w_base, r_base)
    # the exact call register was given, repeated to find: (type, storage, format)
    assert reg.find(Base, "posix", "json").write is w_other
    assert reg.find(Base, "memory", "json").write is w_base
    assert reg.find(Base, storage="posix", format="json").write is w_other


@pytest.mark.parametrize("storage_spec", [False, True])
def test_find_with_swapped_keys_fails_loudly(storage_spec: bool) -> None:
    from butler import StorageSpec

    reg = Registry()
    reg.register(Base, "*", "json", w_base, r_base)
    if storage_spec:
        reg.register_storage(StorageSpec("posix", ("file",), "m:PosixLike"))
    # the pre-0.2 order (type, format, storage) used to miss silently
    with pytest.raises(TypeError, match=r"\(python_type, storage, format\)") as info:
        reg.find(Base, "json", "posix")
    assert "find(Base, 'posix', 'json')" in str(info.value)
    with pytest.raises(TypeError, match="storage='json', which is a format"):
        reg.find(Base, "json", "*")
    # a plain miss in the right order is still a NoSerializerError, not a TypeError
    with pytest.raises(NoSerializerError):
        reg.find(Base, "posix", "fits")
    with pytest.raises(NoSerializerError):
        reg.find(int, "posix", "json")


def test_add_registers_a_serializer_built_elsewhere() -> None:
    from butler import Serializer

    class Local:  # only findable through the class object itself
        pass

    reg = Registry()
    declared = Serializer(Local, "*", "json", w_base, r_base, distribution="butler-x")
    assert reg.add(declared) is declared
    assert reg.find(Local, "posix", "json") is declared
    assert reg.serializers[declared.key].distribution == "butler-x"
    # identical again: a no-op; other callables: the duplicate error; overwrite replaces
    assert reg.add(Serializer(Local, "*", "json", w_base, r_base)) is declared
    with pytest.raises(DuplicateSerializerError, match="butler-x"):
        reg.add(Serializer(Local, "*", "json", w_other, r_other))
    other = Serializer(Local, "*", "json", w_other, r_other)
    assert reg.add(other, overwrite=True) is other
    assert reg.find(Local, "posix", "json").write is w_other


def test_serializer_validates_its_arguments_wherever_it_is_built() -> None:
    from butler import Serializer

    with pytest.raises(TypeError, match="format"):
        Serializer("x.Y", "*", "", "m:w", "m:r")
    with pytest.raises(TypeError, match="python_type"):
        Serializer(42, "*", "json", "m:w", "m:r")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="read"):
        Serializer("x.Y", "*", "json", "m:w", None)


def test_duplicate_storage_and_format_have_their_own_errors() -> None:
    from butler import (
        ButlerError,
        DuplicateFormatError,
        DuplicateStorageError,
        FormatDescriptor,
        StorageSpec,
    )

    reg = Registry()
    reg.register_storage(StorageSpec("posix", ("file",), "a:Storage", distribution="butler-a"))
    reg.register_storage(StorageSpec("posix", ("file",), "a:Storage", distribution="butler-a"))
    with pytest.raises(DuplicateStorageError, match=r"'posix'.*'butler-a'.*overwrite=True") as s:
        reg.register_storage(StorageSpec("posix", ("file",), "b:Storage"))
    reg.register_format(FormatDescriptor("txt", (".txt",), distribution="butler-a"))
    with pytest.raises(DuplicateFormatError, match=r"'txt'.*'butler-a'.*overwrite=True") as f:
        reg.register_format(FormatDescriptor("txt", (".text",)))
    for error in (s.value, f.value):
        assert isinstance(error, ButlerError) and isinstance(error, ValueError)
        assert not isinstance(error, DuplicateSerializerError)
    reg.register_storage(StorageSpec("posix", ("file",), "b:Storage"), overwrite=True)
    reg.register_format(FormatDescriptor("txt", (".text",)), overwrite=True)
    assert reg.storages["posix"].cls == "b:Storage"
    assert reg.formats["txt"].extensions == (".text",)


def test_format_descriptor_repr_shows_description_and_url() -> None:
    from butler import FormatDescriptor

    text = repr(FormatDescriptor("txt", (".txt",), description="Plain text", url="https://x.y"))
    assert "'txt'" in text and ".txt" in text and "Plain text" in text
    assert "Learn more at https://x.y" in text


class _Quacks(type):
    """A metaclass (not an ABC) whose issubclass accepts any class with ``quack``."""

    def __subclasscheck__(cls, sub: type) -> bool:
        return hasattr(sub, "quack") or type.__subclasscheck__(cls, sub)


class Duck(metaclass=_Quacks):
    pass


class Quacker:
    quack = True


class SizedThing:
    def __len__(self) -> int:  # pragma: no cover - only its presence matters
        return 0


@pytest.mark.parametrize(
    "cls",
    [
        dict,
        collections.OrderedDict,
        collections.defaultdict,
        list,
        tuple,
        set,
        frozenset,
        str,
        bytes,
        int,
        bool,
        GrandChild,
        Child,
        Quacker,
        SizedThing,
        type("DictLeaf", (collections.OrderedDict, Base), {}),
    ],
)
def test_lookup_order_is_singledispatch_order(cls: type) -> None:
    """The registry finds what `functools.singledispatch` dispatches to, for plain classes,
    ABCs matched through ``register``/``__subclasshook__``, and a custom metaclass
    ``__subclasscheck__`` (the lookup skips the MRO composition when no such class can
    match: this compares both routes with the reference)."""
    import collections.abc as cabc
    import functools

    registered = [
        object,
        Base,
        Child,
        Duck,
        cabc.Mapping,
        MutableMapping,
        cabc.Sequence,
        cabc.Sized,
        cabc.Set,
        int,
    ]
    reg = Registry()

    @functools.singledispatch
    def reference(obj: object) -> str:
        return "object"

    for i, registered_cls in enumerate(registered):
        name = f"f{i}"

        def w(obj, location, _name=name):  # pragma: no cover - identity matters
            pass

        w.__name__ = name
        reg.register(registered_cls, "*", "x", w, r_base)
        reference.register(registered_cls, lambda obj, _name=name: _name)
    expected = reference.dispatch(cls)(None)
    assert reg.find(cls, "posix", "x").write.__name__ == expected


def test_metaclass_subclasscheck_match_is_found() -> None:
    reg = Registry()
    reg.register(object, "*", "x", w_base, r_base)
    reg.register(Duck, "*", "x", w_other, r_other)
    assert reg.find(Quacker, "posix", "x").write is w_other
    assert reg.find(Base, "posix", "x").write is w_base


def test_pending_module_rescanned_only_after_an_import(tmp_path) -> None:
    """A cached lookup does not rescan the modules string types wait for unless the
    process imported something since; an import that makes one loadable is still seen."""
    (tmp_path / "late_cls_butler.py").write_text("class Late(dict):\n    pass\n")
    sys.path.insert(0, str(tmp_path))
    try:
        reg = Registry()
        reg.register(dict, "*", "x", w_base, r_base)
        reg.register("late_cls_butler.Late", "*", "x", w_other, r_other)
        assert reg.find(dict, "posix", "x").write is w_base
        assert reg._modules_seen == len(sys.modules)
        scans = []
        original = reg._refresh_pending
        reg._refresh_pending = lambda: (scans.append(1), original())[1]  # type: ignore[method-assign]
        assert reg.find(dict, "posix", "x").write is w_base
        assert scans == [], "a cached lookup rescanned although nothing was imported"
        import late_cls_butler

        assert reg.find(late_cls_butler.Late, "posix", "x").write is w_other
        assert scans == [1]
        assert reg._pending_modules == set()
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("late_cls_butler", None)


@dataclasses.dataclass
class _Point:
    x: int = 0


#: Per format, what is registered: formats where only ABCs match some classes (the lookup
#: then answers without composing the MRO when a single candidate has an entry), where an
#: ABC competes with a class in the MRO, and where no ABC has an entry at all.
_BY_FORMAT = {
    "abc-only": ["collections.abc:Sized", "butler._abc:DataclassLike", "Duck"],
    "abc-and-mro": ["collections.abc:Mapping", "collections.abc:Sized", "dict", "Base", "Duck"],
    "mro-only": ["dict", "Base", "object"],
    "two-abcs": ["collections.abc:Sized", "collections.abc:Iterable", "collections.abc:Hashable"],
    "nested-abcs": [
        "collections.abc:Sized",
        "collections.abc:Collection",
        "collections.abc:Mapping",
    ],
}


def _named(name: str) -> type:
    if ":" in name:
        module, attr = name.split(":")
        return getattr(__import__(module, fromlist=[attr]), attr)  # type: ignore[no-any-return]
    return {"dict": dict, "object": object, "Base": Base, "Duck": Duck}[name]


@pytest.mark.parametrize("format", list(_BY_FORMAT))
@pytest.mark.parametrize(
    "cls",
    [
        dict,
        collections.OrderedDict,
        list,
        tuple,
        str,
        bytes,
        int,
        set,
        frozenset,
        SizedThing,
        Quacker,
        Child,
        GrandChild,
        _Point,
        type(None),
    ],
)
def test_lookup_without_composition_answers_as_singledispatch(format: str, cls: type) -> None:
    """The lookup composes the MRO with the ABCs only when their order can change the
    answer; every shortcut gives what `functools.singledispatch` dispatches to (a miss
    where it reaches only its fallback; cases it calls ambiguous are not compared)."""
    import functools

    reg = Registry()

    @functools.singledispatch
    def reference(obj: object) -> str:
        return "none"

    for i, name in enumerate(_BY_FORMAT[format]):
        registered = _named(name)

        def w(obj, location, _name=f"f{i}"):  # pragma: no cover - identity matters
            pass

        w.__name__ = f"f{i}"
        reg.register(registered, "*", format, w, r_base)
        reference.register(registered, lambda obj, _name=f"f{i}": _name)
    try:
        expected = reference.dispatch(cls)(None)
    except RuntimeError:  # "Ambiguous dispatch": singledispatch itself has no answer
        pytest.skip("ambiguous for singledispatch")
    if expected == "none":
        with pytest.raises(NoSerializerError):
            reg.find(cls, "posix", format)
    else:
        assert reg.find(cls, "posix", format).write.__name__ == expected
