"""The routing table: modality (and optional model name) → a generator route → its replicas.

Configured as a map keyed by generator name (the same shape as the Helm chart's values):

    generators:
      sd15:   {modality: image, endpoints: ["gen-sd15:50061"], default: true}
      sdxl:   {modality: image, endpoints: ["dns:///gen-sdxl:50061"]}
      t2v:    {modality: video, endpoints: ["gen-t2v:50061"]}

A meta-response may name a model (``Model: sdxl``); otherwise the modality's default route is
used (the route marked ``default``, or the only one for that modality).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from modaverse_runtime.errors import FailedPrecondition, InvalidArgument, ModaverseError
from modaverse_runtime.settings import comma_list

from .metaresponse import OutputModality

MEDIA_MODALITIES = (OutputModality.IMAGE, OutputModality.VIDEO, OutputModality.AUDIO)


@dataclass(frozen=True)
class Route:
    name: str
    modality: OutputModality
    endpoints: tuple[str, ...]
    default: bool = False
    model: str = ""  # informational: the model id the generator serves


@dataclass
class RoutingTable:
    routes: dict[str, Route] = field(default_factory=dict)

    @classmethod
    def from_config(cls, config: dict[str, Any] | None) -> RoutingTable:
        table = cls()
        generators = (config or {}).get("generators") or {}
        if not isinstance(generators, dict):
            raise FailedPrecondition("routes: 'generators' must be a map keyed by generator name")
        for name, spec in generators.items():
            table.add(cls._route(str(name), spec))
        table.validate()
        return table

    @staticmethod
    def _route(name: str, spec: Any) -> Route:
        if not isinstance(spec, dict):
            raise FailedPrecondition(f"routes: generator {name!r} must be a map")
        unknown = set(spec) - {"modality", "endpoints", "default", "model"}
        if unknown:
            raise FailedPrecondition(f"routes: generator {name!r} has unknown keys {sorted(unknown)}")
        try:
            modality = OutputModality(str(spec.get("modality", "")).lower())
        except ValueError:
            raise FailedPrecondition(f"routes: generator {name!r} needs modality image, video or audio") from None
        endpoints = spec.get("endpoints") or []
        if isinstance(endpoints, str):
            endpoints = comma_list(endpoints)
        if modality not in MEDIA_MODALITIES or not endpoints:
            raise FailedPrecondition(f"routes: generator {name!r} needs a media modality and endpoints")
        return Route(
            name, modality, tuple(str(e) for e in endpoints), bool(spec.get("default")), str(spec.get("model", ""))
        )

    def add(self, route: Route) -> None:
        self.routes[route.name] = route

    def validate(self) -> None:
        for modality in MEDIA_MODALITIES:
            defaults = [r.name for r in self.for_modality(modality) if r.default]
            if len(defaults) > 1:
                raise FailedPrecondition(f"routes: several default {modality} generators: {defaults}")

    def for_modality(self, modality: OutputModality) -> list[Route]:
        return [r for r in self.routes.values() if r.modality is modality]

    def default_for(self, modality: OutputModality) -> Route | None:
        candidates = self.for_modality(modality)
        marked = [r for r in candidates if r.default]
        if marked:
            return marked[0]
        return candidates[0] if len(candidates) == 1 else None

    def resolve(
        self, modality: OutputModality, model: str = "", *, unknown: type[ModaverseError] = InvalidArgument
    ) -> Route:
        """The route for an invocation. Missing routes and a model of another modality are INVALID_ARGUMENT;
        an unknown name raises ``unknown``: INVALID_ARGUMENT in a chat (where the name is one of its
        options), NOT_FOUND for Generate (where the caller names the route it wants)."""
        if model:
            route = self.routes.get(model)
            if route is None:
                known = ", ".join(r.name for r in self.for_modality(modality)) or "none"
                raise unknown(f"unknown {modality} model {model!r}; routable: {known}")
            if route.modality is not modality:
                raise InvalidArgument(f"model {model!r} generates {route.modality}, not {modality}")
            return route
        route = self.default_for(modality)
        if route is None:
            raise InvalidArgument(f"no {modality} generator is configured on this gateway")
        return route


def load_routes(path: Path | None, inline: str) -> RoutingTable:
    """The table from ``path`` (JSON when it ends in ``.json``, else YAML) or, without one, from ``inline``."""
    text = path.read_text() if path is not None else inline
    return parse_routes(text, json_text=path is not None and path.suffix == ".json")


def parse_routes(text: str, *, json_text: bool = False) -> RoutingTable:
    """A validated table, or FailedPrecondition naming what is wrong; blank text is the empty table."""
    if not text.strip():
        return RoutingTable()
    try:
        config = json.loads(text) if json_text else yaml.safe_load(text)
    except (yaml.YAMLError, json.JSONDecodeError) as exc:
        raise FailedPrecondition(f"routes: not valid YAML/JSON: {exc}") from exc
    if not isinstance(config, dict):
        raise FailedPrecondition("routes: expected a map with a 'generators' key")
    return RoutingTable.from_config(config)
