"""One registry per axis of a trial: datasets, models, selection methods, modifiers, protocols.

Each implementation registers itself once, in its own module, with a name, a one-line
description and the facts other layers need (a model's GPU share, whether a method clusters).
Config validation, the command line's choices, the grid's checks, `--dry-run` and the README's
tables all read these registries, so adding a model, a dataset or a method is one edit in one
file. A registry imports the modules that hold its built-in entries on first use (plugin
loading by name), so this module itself depends on nothing above it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from raydistill.errors import ConfigError

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    description: str
    obj: T
    meta: Mapping[str, Any] = field(default_factory=dict)

    def __getattr__(self, key: str) -> Any:
        try:
            return self.meta[key]
        except KeyError:
            raise AttributeError(key) from None


class Registry(Generic[T]):
    """Names of one axis mapped to their implementations, in registration order."""

    def __init__(self, axis: str, modules: tuple[str, ...]):
        self.axis = axis
        self._modules = modules
        self._entries: dict[str, Entry[T]] = {}
        self._loaded = False

    def register(self, name: str, description: str, **meta: Any) -> Callable[[T], T]:
        """Decorator: `@MODELS.register("lenet", "LeNet-5 ...", gpu_share=0.25)`."""
        def add(obj: T) -> T:
            self.add(name, description, obj, **meta)
            return obj

        return add

    def add(self, name: str, description: str, obj: T, **meta: Any) -> None:
        if name in self._entries:
            raise ValueError(f"{self.axis} {name!r} is registered twice")
        self._entries[name] = Entry(name, description, obj, dict(meta))

    def _load(self) -> None:
        if not self._loaded:
            self._loaded = True
            for module in self._modules:
                importlib.import_module(module)

    def names(self) -> tuple[str, ...]:
        self._load()
        return tuple(self._entries)

    def entries(self) -> Iterator[Entry[T]]:
        self._load()
        return iter(tuple(self._entries.values()))

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._entries

    def __getitem__(self, name: str) -> Entry[T]:
        self.check(name)
        return self._entries[name]

    def check(self, name: object) -> None:
        """Raise ConfigError naming the allowed values when `name` is not registered."""
        if name not in self:
            raise ConfigError(f"unknown {self.axis} {name!r}; allowed: {', '.join(self.names())}")


def markdown() -> str:
    """Every axis as a markdown table (name, what it is): the README's tables are this output."""
    blocks = []
    for axis, registry in AXES.items():
        rows = "\n".join(f"| `{e.name}` | {e.description} |" for e in registry.entries())
        blocks.append(f"| {axis} | what it is |\n|---|---|\n{rows}")
    return "\n\n".join(blocks)


DATASETS: Registry = Registry("dataset", ("raydistill.data",))
MODELS: Registry = Registry("model", ("raydistill.models",))
METHODS: Registry = Registry("method", ("raydistill.distill.methods",))
MODIFIERS: Registry = Registry("modifier", ("raydistill.distill.modifiers",))
PROTOCOLS: Registry = Registry("protocol", ("raydistill.protocols",))
AXES = {"dataset": DATASETS, "model": MODELS, "method": METHODS, "modifier": MODIFIERS, "protocol": PROTOCOLS}
