"""One typed service registry per control plane, shared by every module.

A module publishes objects in its lifespan and handlers (its own or another
module's) read them back by a typed key::

    MODEL_REFS: ServiceKey[ModelRefTracker] = ServiceKey("catalog.model_refs")
    ctx.provide(MODEL_REFS, ModelRefs())        # catalog's lifespan
    refs = ctx.services[MODEL_REFS]             # any module; typed as ModelRefTracker

Rules, checked when a service is provided (so during start-up, which then fails):

* a key's name starts with the providing module's name and a dot (``catalog.…``),
  so every name says who owns it;
* a key is provided once per control plane (``DuplicateService`` names both modules).

Reading a key nobody provided raises ``MissingService``, which lists what each
module does provide. Modules start in discovery order, so a lifespan should not
read another module's service; read it per request (handlers run after start-up).

Keys for services meant for *other* modules live in ``adapters.adminapi.seams``
together with the protocol they are typed by, because modules never import one
another; keys a module only uses itself live in that module.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, TypeVar, cast

__all__ = ["DuplicateService", "MissingService", "ServiceError", "ServiceKey", "ServiceRegistry"]

T = TypeVar("T")


class ServiceError(Exception):
    """A service was provided twice, under a foreign name, or read without being provided."""


class DuplicateService(ServiceError):
    pass


class MissingService(ServiceError, LookupError):
    pass


@dataclass(frozen=True)
class ServiceKey(Generic[T]):
    """Names one service and, through ``T``, its type; compare and hash by name."""

    name: str

    def __post_init__(self) -> None:
        module, dot, rest = self.name.partition(".")
        if not (module and dot and rest):
            raise ValueError(f"service key {self.name!r} must be '<module>.<service>'")

    @property
    def module(self) -> str:
        """The module that must provide it: the part before the first dot."""
        return self.name.partition(".")[0]


class ServiceRegistry:
    """Services of one running control plane; the host makes a fresh one per start."""

    def __init__(self) -> None:
        self._services: dict[str, tuple[str, Any]] = {}  # key name -> (providing module, service)

    def provide(self, module: str, key: ServiceKey[T], service: T) -> None:
        if key.module != module:
            raise ServiceError(f"module {module!r} cannot provide {key.name!r}: "
                               f"service names start with the providing module ('{module}.…')")
        if key.name in self._services:
            raise DuplicateService(f"service {key.name!r} is provided twice "
                                   f"(by {self._services[key.name][0]!r} and by {module!r})")
        self._services[key.name] = (module, service)

    def get(self, key: ServiceKey[T]) -> T:
        try:
            return cast(T, self._services[key.name][1])  # provide() took a T under this key
        except KeyError:
            raise MissingService(
                f"no module provides service {key.name!r} (is module {key.module!r} enabled and started?); "
                f"provided: {self._describe()}"
            ) from None

    __getitem__ = get

    def __contains__(self, key: object) -> bool:
        return isinstance(key, ServiceKey) and key.name in self._services

    def providers(self) -> dict[str, list[str]]:
        """Module name -> the service names it provides, sorted."""
        out: dict[str, list[str]] = {}
        for name, (module, _service) in sorted(self._services.items()):
            out.setdefault(module, []).append(name)
        return out

    def _describe(self) -> str:
        return "; ".join(f"{module}: {', '.join(names)}" for module, names in self.providers().items()) or "none"
