"""Name → implementation registries, so swapping a model is a configuration change.

Entries are import paths (``"package.module:Class"``), imported only when chosen: a
deployment that never uses vLLM never imports it.
"""

from __future__ import annotations

import importlib
from typing import Any, Generic, TypeVar, cast

from .errors import FailedPrecondition

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, role: str, base: type[Any]) -> None:
        # ``base`` is the role's (usually abstract) base class, checked on resolve.
        self.role = role
        self.base = base
        self._entries: dict[str, str] = {}

    def register(self, name: str, import_path: str) -> None:
        if name in self._entries and self._entries[name] != import_path:
            raise ValueError(f"{self.role} {name!r} is already registered as {self._entries[name]}")
        self._entries[name] = import_path

    def names(self) -> list[str]:
        return sorted(self._entries)

    def resolve(self, name: str) -> type[T]:
        # A full import path also works, for implementations that live outside this repo.
        path = self._entries.get(name, name if ":" in name else None)
        if path is None:
            raise FailedPrecondition(f"unknown {self.role} {name!r}; known: {', '.join(self.names())}")
        module_name, _, attr = path.partition(":")
        cls = getattr(importlib.import_module(module_name), attr)
        if not (isinstance(cls, type) and issubclass(cls, self.base)):
            raise FailedPrecondition(f"{path} is not a {self.base.__name__}")
        return cast(type[T], cls)
