"""The plugin host: loads plugin modules and entry points, collects their components.

Built-in plugins are ordinary modules listed in the registry file; third-party packages
declare modules in the ``kdbench`` entry-point group.  Both are registered with pluggy
the same way, and both register components through the same ``register`` callback,
which validates names and refuses duplicates.

``KDBENCH_PLUGINS`` (comma-separated plugin names) allow-lists plugins and
``KDBENCH_BLOCK_PLUGINS`` blocks some, for reproducible runs.
"""
import dataclasses
import functools
import importlib
import importlib.metadata
import os
import re

import pluggy

from . import hookspecs
from .attack import Attack
from .data import Dataset
from .defense import Defense
from .distiller import Distiller
from .errors import ConfigError, unknown_name
from .executor import Executor
from .network import Architecture

KINDS = {
    "dataset": ("register_datasets", Dataset),
    "architecture": ("register_architectures", Architecture),
    "attack": ("register_attacks", Attack),
    "distiller": ("register_distillers", Distiller),
    "defense": ("register_defenses", Defense),
    "executor": ("register_executors", Executor),
}
NAME = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclasses.dataclass(frozen=True)
class Registration:
    """One registered component and where it came from."""

    kind: str
    name: str
    cls: type
    plugin: str
    plugin_version: str

    @property
    def version(self) -> str:
        return str(self.cls.version)

    @property
    def paper(self) -> str:
        return self.cls.paper


class PluginHost:
    """Every component the loaded plugins registered, by kind and name."""

    def __init__(self, modules=(), entry_points: bool = True):
        self.modules = list(modules)
        self.pm = pluggy.PluginManager("kdbench")
        self.pm.add_hookspecs(hookspecs)
        self.versions = {}
        allowed = _names_from_env("KDBENCH_PLUGINS")
        blocked = _names_from_env("KDBENCH_BLOCK_PLUGINS")
        for plugin_name, load, version in self._sources(modules, entry_points):
            if plugin_name in blocked or (allowed and plugin_name not in allowed):
                continue
            if self.pm.has_plugin(plugin_name):
                continue
            self.pm.register(load(), name=plugin_name)
            self.versions[plugin_name] = version
        self.pm.check_pending()
        self.components = {kind: {} for kind in KINDS}
        for kind, (hook_name, _) in KINDS.items():
            for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
                impl.function(register=self._register_callback(kind, impl.plugin_name))

    @staticmethod
    def _sources(modules, entry_points):
        for module in modules:
            yield module, lambda module=module: _import(module), _module_version(module)
        if entry_points:
            for ep in importlib.metadata.entry_points(group="kdbench"):
                version = ep.dist.version if ep.dist is not None else "unknown"
                plugin = ep.dist.name if ep.dist is not None else ep.value
                yield plugin, ep.load, version

    def _register_callback(self, kind, plugin):
        base = KINDS[kind][1]

        def register(cls):
            name = getattr(cls, "name", None)
            if not isinstance(cls, type) or not issubclass(cls, base):
                raise ConfigError(f"plugin {plugin} registered {cls!r} as a {kind}, but it is not a kdbench.{base.__name__}")
            if not isinstance(name, str) or not NAME.match(name):
                raise ConfigError(f"plugin {plugin}: {cls.__name__} has an invalid {kind} name {name!r} (lowercase letters, digits, _)")
            if not dataclasses.is_dataclass(cls) or cls.__dict__.get("__dataclass_fields__") is None:
                raise ConfigError(f"plugin {plugin}: {cls.__name__} must be a @dataclass (its fields are its options)")
            if not cls.paper:
                raise ConfigError(f"plugin {plugin}: {kind} '{name}' does not cite its paper (set `paper`)")
            previous = self.components[kind].get(name)
            if previous is not None:
                raise ConfigError(f"{kind} '{name}' registered twice: by {previous.plugin} and by {plugin}")
            self.components[kind][name] = Registration(kind, name, cls, plugin, self.versions.get(plugin, "unknown"))
            return cls

        return register

    def get(self, kind: str, name: str) -> Registration:
        found = self.components[kind].get(name)
        if found is None:
            raise unknown_name(kind, name, self.components[kind])
        return found

    def create(self, kind: str, name: str, options: dict | None = None):
        """An instance of the named component with the given options.

        An architecture name nobody registered (a timm model name, or ``timm:<name>``)
        is offered to each architecture's ``claims``.
        """
        options = dict(options or {})
        if kind == "architecture" and name not in self.components[kind]:
            for registration in self.components[kind].values():
                if registration.cls.claims(name):
                    return registration, registration.cls.from_name(name, options)
        registration = self.get(kind, name)
        return registration, registration.cls.create(options)

    def all(self):
        for kind in KINDS:
            yield from sorted(self.components[kind].values(), key=lambda r: r.name)


def _import(module: str):
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ConfigError(f"cannot import plugin module '{module}': {error}") from None


def _module_version(module: str) -> str:
    dist = _distribution_of(module.split(".")[0])
    return importlib.metadata.version(dist) if dist else "unknown"


@functools.cache
def _distribution_of(top: str) -> str | None:
    """The distribution installing the top-level package ``top``: the first whose
    ``top_level.txt`` names it (milliseconds), else the one a scan of every distribution's
    file list finds (a second; for packages built without that file)."""
    for dist in importlib.metadata.distributions():
        if top in (dist.read_text("top_level.txt") or "").split():
            return dist.metadata["Name"]
    return next(iter(importlib.metadata.packages_distributions().get(top, [])), None)


def _names_from_env(variable: str) -> set:
    return {name.strip() for name in os.environ.get(variable, "").split(",") if name.strip()}
