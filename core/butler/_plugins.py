"""Plugin discovery: entry points of the ``butler`` group, loaded with pluggy.

Rules
-----
* A plugin that fails to import, fails pluggy's validation, or whose hook raises becomes a
  ``RuntimeWarning`` and a "failed" row in `plugins()`; the host keeps working.
* When several plugins declare the same (type, storage, format), the winner is the first
  of: a distribution named in the user's preference list (``BUTLER_PREFER`` environment
  variable, comma-separated, or ``refresh_plugins(prefer=...)``), then the highest
  ``priority``, then butler-core, then the alphabetically first distribution name.
  Discovery order never matters. Every conflict is recorded with its winner.
* Discovery runs once per process (cached); `refresh_plugins` runs it again, e.g. after
  installing a distribution, and updates the one process-wide `Registry` in place:
  ``Butler`` objects created earlier see the new plugins, and what was registered through
  the API (``butler.register``, ``Registry.register``/``add``) survives and keeps
  precedence over a plugin declaring the same key.

Why each plugin's hook is called separately
-------------------------------------------
Hooks are called through pluggy (its ``HookCaller``, so tracing, call monitoring and
argument checking apply), but once per plugin, through ``pm.subset_hook_caller(hook,
remove_plugins=<every other plugin>)``, not once as ``pm.hook.butler_serializers()``.
pluggy's call loop (``_multicall``) stops at the first implementation that raises and
re-raises after the wrappers, discarding the results already collected; a wrapper
(``wrapper=True``) sees only that one exception, never the other plugins' results, and
pluggy has no per-implementation isolation. One broken plugin would then hide every
other plugin's declarations, breaking the rule above. The cost is one subset caller per
plugin and hook (microseconds for the handful of installed plugins); a hook wrapper of a
plugin wraps that plugin's own implementation only.
"""

from __future__ import annotations

import importlib
import os
import threading
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import pluggy

from . import _builtins, hookspecs
from ._components import ComponentReader, Components, catalog_for
from ._declarations import FormatDescriptor, Serializer, StorageSpec
from ._entry_points import Installed
from ._registry import Registry

__all__ = [
    "Conflict",
    "Discovery",
    "PluginInfo",
    "default_registry",
    "discover",
    "discovery",
    "plugins",
    "refresh_plugins",
]

CORE_DISTRIBUTION = "butler-core"
ENTRY_POINT_GROUP = "butler"
PREFER_ENV = "BUTLER_PREFER"


@dataclass(frozen=True)
class PluginInfo:
    """One discovered plugin: its entry point, distribution, version and status."""

    name: str
    distribution: str
    version: str
    module: str
    status: str  # "loaded" | "failed" | "builtin"
    error: str = ""


@dataclass(frozen=True)
class Conflict:
    """Several distributions declared the same thing; ``winner`` is the one in use."""

    kind: str  # "serializer" | "storage" | "format"
    key: tuple[str, ...]
    candidates: tuple[str, ...]
    winner: str


@dataclass
class Discovery:
    """The outcome of one discovery run."""

    registry: Registry
    plugins: list[PluginInfo] = field(default_factory=list)
    conflicts: list[Conflict] = field(default_factory=list)


#: What a hook may return.
_DECLARATIONS = (Serializer, StorageSpec, FormatDescriptor, Components, ComponentReader)


def _warn(message: str) -> None:
    warnings.warn(message, RuntimeWarning, stacklevel=3)


def _prefer_order(prefer: Sequence[str] | None) -> list[str]:
    if prefer is None:
        env = os.environ.get(PREFER_ENV, "")
        prefer = [p.strip() for p in env.split(",") if p.strip()]
    return list(prefer)


def _rank(prefer: list[str]) -> Callable[[Any], tuple[Any, ...]]:
    def rank(item: Any) -> tuple[Any, ...]:
        dist = item.distribution
        preferred = prefer.index(dist) if dist in prefer else len(prefer)
        return (preferred, -getattr(item, "priority", 0), dist != CORE_DISTRIBUTION, dist)

    return rank


def _load_entry_points(
    pm: pluggy.PluginManager, installed: Installed, infos: list[PluginInfo]
) -> dict[str, str]:
    """Import and register every ``butler`` entry point; returns plugin name → distribution."""
    owners: dict[str, str] = {}
    found = installed.entry_points(ENTRY_POINT_GROUP)
    for ep in sorted(found, key=lambda e: (e.name, e.value)):
        dist, version = ep.distribution, ep.version
        plugin_name = f"{dist}:{ep.name}"
        if pm.has_plugin(plugin_name):
            continue  # the same distribution visible twice on sys.path
        try:
            module = ep.load()
            pm.register(module, name=plugin_name)
        except Exception as exc:
            _warn(f"Plugin {ep.name!r} ({dist}) failed to load:\n{type(exc).__name__}: {exc}")
            infos.append(PluginInfo(ep.name, dist, version, ep.value, "failed", repr(exc)))
            continue
        owners[plugin_name] = dist
        infos.append(PluginInfo(ep.name, dist, version, ep.value, "loaded"))
    return owners


def _collect(
    pm: pluggy.PluginManager, hook: str, owners: dict[str, str], infos: list[PluginInfo]
) -> list[Any]:
    """Call one hook plugin by plugin, so one raising plugin does not hide the others.

    Returns the declarations, each recorded as owned by its plugin's distribution.
    """
    impls = getattr(pm.hook, hook).get_hookimpls()
    plugins = list(dict.fromkeys(impl.plugin for impl in impls))
    declarations: list[Any] = []
    for plugin in plugins:
        name = pm.get_name(plugin) or repr(plugin)
        dist = owners.get(name, name)
        caller = pm.subset_hook_caller(hook, [other for other in plugins if other is not plugin])
        try:
            items = [item for result in caller() for item in (result or [])]
            for item in items:
                if not isinstance(item, _DECLARATIONS):
                    raise TypeError(f"{hook}() returned {item!r}, not a butler declaration")
        except Exception as exc:
            _warn(f"Plugin {name!r} hook {hook}() failed:\n{type(exc).__name__}: {exc}")
            _mark_failed(infos, dist, f"{hook}(): {exc!r}")
            continue
        declarations += [
            item.owned_by(dist)
            if isinstance(item, Serializer | Components | ComponentReader)
            else replace(item, distribution=dist)
            for item in items
        ]
    return declarations


def _mark_failed(infos: list[PluginInfo], dist: str, error: str) -> None:
    for i, info in enumerate(infos):
        if info.distribution == dist:
            infos[i] = replace(info, status="failed", error=error)


def _resolve(
    kind: str, items: Iterable[Any], key: Callable[[Any], tuple[str, ...]], prefer: list[str]
) -> tuple[list[Any], list[Conflict]]:
    groups: dict[tuple[str, ...], list[Any]] = {}
    for item in items:
        groups.setdefault(key(item), []).append(item)
    winners, conflicts = [], []
    for k, group in sorted(groups.items()):
        group.sort(key=_rank(prefer))
        winners.append(group[0])
        dists = tuple(dict.fromkeys(i.distribution for i in group))
        if len(dists) > 1:
            conflicts.append(Conflict(kind, k, dists, group[0].distribution))
    return winners, conflicts


def discover(prefer: Sequence[str] | None = None) -> Discovery:
    """Run discovery now into a new `Registry` (not cached; see `discovery`)."""
    return _discover_into(Registry(), prefer)


def _discover_into(registry: Registry, prefer: Sequence[str] | None) -> Discovery:
    """Run discovery and install its winners in ``registry`` (replacing the last run's)."""
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    pm.register(_builtins, name=CORE_DISTRIBUTION)
    installed = Installed()  # read from the file system now: nothing cached between runs
    core_version = installed.version(CORE_DISTRIBUTION) or "unknown"
    infos = [PluginInfo("core", CORE_DISTRIBUTION, core_version, "butler._builtins", "builtin")]
    owners = {CORE_DISTRIBUTION: CORE_DISTRIBUTION}
    owners.update(_load_entry_points(pm, installed, infos))
    order = _prefer_order(prefer)

    storages, c1 = _resolve(
        "storage", _collect(pm, "butler_storages", owners, infos), lambda s: (s.type_name,), order
    )
    formats, c2 = _resolve(
        "format", _collect(pm, "butler_formats", owners, infos), lambda f: (f.name,), order
    )
    serializers, c3 = _resolve(
        "serializer", _collect(pm, "butler_serializers", owners, infos), lambda s: s.key, order
    )
    components = _collect(pm, "butler_components", owners, infos)
    failures = [f"{i.name} ({i.distribution}): {i.error}" for i in infos if i.status == "failed"]
    shadowed = registry._install_discovered(serializers, storages, formats, failures)
    catalog_for(registry).install_discovered(components)
    # A registration made through the API wins over every plugin: say so like any conflict.
    kept = [Conflict(kind, key, (dist, kept), kept) for kind, key, dist, kept in shadowed]
    return Discovery(registry, infos, c1 + c2 + c3 + kept)


_lock = threading.Lock()
_current: Discovery | None = None


def discovery() -> Discovery:
    """The process-wide discovery result (discovering on first use)."""
    global _current
    if _current is None:
        with _lock:
            if _current is None:
                _current = discover()
    return _current


def default_registry() -> Registry:
    """The process-wide `Registry`, filled by every installed plugin."""
    return discovery().registry


def plugins() -> list[PluginInfo]:
    """Discovered plugins with their status (``loaded``, ``failed``, ``builtin``)."""
    return list(discovery().plugins)


def refresh_plugins(prefer: Sequence[str] | None = None) -> Registry:
    """Discover again (picking up newly installed distributions), in place.

    The process-wide registry stays the same object, so ``Butler`` objects created earlier
    see the new plugins; serializers, storages and formats registered through the API
    (``butler.register``, `Registry.register`, `Registry.add`, ...) are kept, and keep
    winning over a plugin that declares the same key.

    Parameters
    ----------
    prefer
        Distribution names that win serializer conflicts, in order (overrides
        ``BUTLER_PREFER``).

    Returns
    -------
    Registry
        The process-wide registry, `default_registry()`.
    """
    global _current
    importlib.invalidate_caches()
    with _lock:
        if _current is None:
            _current = discover(prefer)
        else:
            _current = _discover_into(_current.registry, prefer)
    return _current.registry
