"""Strict field checks for custom resources, from the TypeScript declarations of @kubernetes-models.

The packages' compiled validators check types, enums and required fields but let unknown fields through (as the
API server would, silently pruning them). Their ``.d.ts`` files spell out every field, so this module reads them
into a tree of allowed keys and reports the manifest keys that are not there (a typo such as ``minReplicas`` in a
ScaledObject).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Shape:
    """An object type: its known fields and, for index signatures, the shape of any key."""

    fields: dict[str, TypeRef] = field(default_factory=dict)
    any_key: TypeRef | None = None


@dataclass
class TypeRef:
    """A type expression: object shapes it may be (unions), lists (Array<...>), or opaque (string, number...)."""

    shapes: list[Shape] = field(default_factory=list)
    item: TypeRef | None = None
    opaque: bool = False


_COMMENTS = re.compile(r"/\*.*?\*/|//[^\n]*", re.S)
_IMPORT = re.compile(r'import\s*\{([^}]*)\}\s*from\s*"([^"]+)"')
_TOKEN = re.compile(r'\s*("(?:[^"\\]|\\.)*"|[A-Za-z_$][\w$.]*|\[|\]|\{|\}|<|>|\(|\)|\?|:|;|,|\||&|=|\d+)')


class _Module:
    def __init__(self, path: Path, node_modules: Path) -> None:
        self.path = path
        self.node_modules = node_modules
        self.text = _COMMENTS.sub("", path.read_text())
        self.imports: dict[str, str] = {}
        for names, source in _IMPORT.findall(self.text):
            for name in names.split(","):
                parts = name.strip().split(" as ")
                if parts[0]:
                    self.imports[parts[-1].strip()] = source

    def resolve(self, source: str) -> Path | None:
        if source.startswith("."):
            candidate = (self.path.parent / source).with_suffix(".d.ts")
        else:
            candidate = self.node_modules / f"{source}.d.ts"
        return candidate if candidate.is_file() else None


class _Parser:
    def __init__(self, module: _Module, body: str, loader: _Loader) -> None:
        self.module = module
        self.tokens = _TOKEN.findall(body)
        self.pos = 0
        self.loader = loader

    def peek(self) -> str:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else ""

    def take(self, expected: str | None = None) -> str:
        token = self.peek()
        if expected is not None and token != expected:
            raise ValueError(f"{self.module.path.name}: expected {expected!r}, got {token!r} at {self.pos}")
        self.pos += 1
        return token

    def shape(self) -> Shape:
        """Members up to the closing brace (the opening one already taken)."""
        out = Shape()
        while self.peek() != "}":
            if self.peek() == "[":  # [key: string]: T;
                while self.take() != "]":
                    pass
                self.take(":")
                out.any_key = self.type_expr()
            else:
                name = self.take().strip('"')
                if self.peek() == "?":
                    self.take()
                self.take(":")
                out.fields[name] = self.type_expr()
            if self.peek() in (";", ","):
                self.take()
        self.take("}")
        return out

    def type_expr(self) -> TypeRef:
        out = TypeRef()
        while True:
            part = self.primary()
            out.shapes += part.shapes
            out.item = out.item or part.item
            out.opaque = out.opaque or part.opaque
            if self.peek() not in ("|", "&"):
                return out
            self.take()

    def primary(self) -> TypeRef:
        token = self.take()
        if token == "{":
            return TypeRef(shapes=[self.shape()])
        if token == "Array":
            self.take("<")
            item = self.type_expr()
            self.take(">")
            return TypeRef(item=item)
        if token == "(":
            inner = self.type_expr()
            self.take(")")
            return inner
        if token.startswith("I") and token in self.module.imports:
            path = self.module.resolve(self.module.imports[token])
            shape = self.loader.interface(path) if path else None
            return TypeRef(shapes=[shape]) if shape else TypeRef(opaque=True)
        if self.peek() == "[":  # IFoo["spec"]: not used in interfaces we read
            while self.take() != "]":
                pass
        return TypeRef(opaque=True)


class _Loader:
    def __init__(self, node_modules: Path) -> None:
        self.node_modules = node_modules
        self.cache: dict[Path, Shape | None] = {}

    def interface(self, path: Path) -> Shape | None:
        """The first exported interface of a declaration file, with the members of what it extends."""
        if path in self.cache:
            return self.cache[path]
        self.cache[path] = None  # recursion guard (self-referencing types stay opaque)
        module = _Module(path, self.node_modules)
        match = re.search(r"export interface (\w+)(?:\s+extends\s+([\w$.,\s]+?))?\s*\{", module.text)
        if match is None:
            return None
        start = match.end()
        depth, end = 1, start
        while depth:
            depth += {"{": 1, "}": -1}.get(module.text[end], 0)
            end += 1
        parser = _Parser(module, module.text[start:end], self)
        shape = parser.shape()
        for base in (match.group(2) or "").split(","):
            base = base.strip()
            if base in module.imports:
                base_path = module.resolve(module.imports[base])
                inherited = self.interface(base_path) if base_path else None
                if inherited:
                    shape.fields = {**inherited.fields, **shape.fields}
        self.cache[path] = shape
        return shape


@functools.cache
def load_shape(declaration: Path, node_modules: Path) -> Shape:
    shape = _Loader(node_modules).interface(declaration)
    if shape is None:
        raise ValueError(f"no interface in {declaration}")
    return shape


def unknown_fields(value: Any, ref: TypeRef | Shape, path: str = "") -> list[str]:
    """Paths in ``value`` whose keys the declared type does not have."""
    if isinstance(ref, Shape):
        ref = TypeRef(shapes=[ref])
    if ref.opaque and not ref.shapes and ref.item is None:
        return []
    if isinstance(value, list) and ref.item is not None:
        return [p for i, v in enumerate(value) for p in unknown_fields(v, ref.item, f"{path}[{i}]")]
    if not isinstance(value, dict) or not ref.shapes:
        return []
    best: list[str] | None = None
    for shape in ref.shapes:  # a union: the member that fits best
        found: list[str] = []
        for key, child in value.items():
            child_ref = shape.fields.get(key, shape.any_key)
            if child_ref is None:
                found.append(f"{path}.{key}")
            else:
                found += unknown_fields(child, child_ref, f"{path}.{key}")
        if best is None or len(found) < len(best):
            best = found
    return best or []
