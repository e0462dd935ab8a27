"""Name -> builder tables for everything a config chooses by name.

Each kind of extension (adapters, baselines, loggers, adversarial methods, pretrain objectives,
ranking metrics, item features, tasks) has one ``Registry``, and each implementation registers
itself in its own module::

    from crossrec_cli.adapters import ADAPTERS

    @ADAPTERS.register("lora", "adalora")
    class Peft: ...

``Registry.get`` imports every module of the registry's package before it looks a name up, so a
new extension is one new module (plus its config file) and nothing else changes. An unknown name
is a ``CrossrecError`` that names the config key and lists what is registered.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from crossrec_cli.errors import CrossrecError

T = TypeVar("T")


class Registry(Generic[T]):
    """Names -> objects of one kind; ``package`` holds the modules that register into it."""

    def __init__(self, kind: str, key: str, package: str | None = None):
        self.kind, self.key, self.package = kind, key, package
        self._items: dict[str, T] = {}
        self._loaded = package is None

    def register(self, *names: str) -> Callable[[T], T]:
        """Decorator: register the decorated object under each of ``names``."""

        def add(obj: T) -> T:
            for name in names:
                if name in self._items and self._items[name] is not obj:
                    raise ValueError(f"{self.kind} {name!r} is registered twice")
                self._items[name] = obj
            return obj

        return add

    def add(self, name: str, obj: T) -> T:
        return self.register(name)(obj)

    def _load(self) -> None:
        if self._loaded or self.package is None:
            return
        self._loaded = True
        pkg = importlib.import_module(self.package)
        for info in pkgutil.iter_modules(pkg.__path__):
            importlib.import_module(f"{self.package}.{info.name}")

    def get(self, name: str, key: str | None = None) -> T:
        """The object registered as ``name``; unknown: a CrossrecError naming ``key``."""
        self._load()
        if name not in self._items:
            raise CrossrecError(key or self.key, f"unknown {self.kind} {name!r}",
                                f"expected one of: {', '.join(self.names())}")
        return self._items[name]

    def names(self) -> list[str]:
        self._load()
        return list(self._items)

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def items(self) -> list[tuple[str, Any]]:
        self._load()
        return list(self._items.items())
