"""One small name -> factory registry, reused for every kind of plugin.

Modelled on timm's ``register_model`` / ``create_model`` / ``list_models``: a decorator
registers a factory under its function name (or an explicit name), ``names()`` lists them
with an fnmatch filter, and ``create()`` builds one. A miss raises :class:`UnknownNameError`
whose message lists every valid name, so a typo on the command line tells the user what to
type instead. Duplicate names raise instead of silently replacing a plugin.
"""

from __future__ import annotations

import fnmatch
from typing import Any, Callable, Generic, TypeVar

T = TypeVar("T")


class UnknownNameError(LookupError):
    """Raised when a registry has no entry under the requested name."""

    def __str__(self) -> str:  # LookupError quotes its argument; keep the message plain
        return str(self.args[0]) if self.args else ""


class Registry(Generic[T]):
    """Name -> factory mapping for one kind of plugin ("dataset", "generator", "head", ...)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._factories: dict[str, Callable[..., T]] = {}

    def register(self, fn: Callable[..., T] | None = None, *, name: str | None = None) -> Any:
        """Register ``fn`` under ``name`` (default: its ``__name__`` with ``_`` -> ``-``).

        Usable bare (``@reg.register``) or with a name (``@reg.register(name="masked-photos")``).
        """

        def deco(f: Callable[..., T]) -> Callable[..., T]:
            key = name or f.__name__.replace("_", "-")
            if key in self._factories:
                other = self._factories[key].__module__
                raise ValueError(f"{self.kind} {key!r} is already registered by {other}")
            self._factories[key] = f
            return f

        return deco(fn) if fn is not None else deco

    def get(self, name: str) -> Callable[..., T]:
        """Return the factory registered under ``name`` (``_`` and ``-`` are interchangeable)."""
        key = name.replace("_", "-")
        if key not in self._factories:
            raise UnknownNameError(
                f"Unknown {self.kind} {name!r}. Available: {', '.join(self.names()) or '(none)'}"
            )
        return self._factories[key]

    def create(self, name: str, **kwargs: Any) -> T:
        """Build the plugin ``name``; ``None``-valued kwargs are dropped so defaults apply."""
        return self.get(name)(**{k: v for k, v in kwargs.items() if v is not None})

    def names(self, pattern: str = "*") -> list[str]:
        return sorted(fnmatch.filter(self._factories, pattern))

    def __contains__(self, name: str) -> bool:
        return name.replace("_", "-") in self._factories

    def __len__(self) -> int:
        return len(self._factories)


class LazyRegistry(Registry[T]):
    """A registry whose built-in plugin modules are imported on first lookup.

    Lookups import ``modules`` one at a time until the name is found (so a cheap plugin never
    pays for importing an expensive one, e.g. torch); ``names()`` imports them all. Importing
    on lookup, not at module import, also keeps plugin modules free to import the module that
    defines the registry without a circular import. A module missing only because an optional
    dependency is absent is passed over.
    """

    def __init__(self, kind: str, modules: tuple[str, ...], optional: tuple[str, ...] = ("torch", "torchvision")
                 ) -> None:
        super().__init__(kind)
        self._pending = list(modules)
        self._optional = optional

    def _load_next(self) -> bool:
        import importlib

        if not self._pending:
            return False
        mod = self._pending.pop(0)
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as err:
            if err.name not in (mod, *self._optional):
                raise
        return True

    def _load_until(self, name: str) -> None:
        while name.replace("_", "-") not in self._factories and self._load_next():
            pass

    def get(self, name: str) -> Callable[..., T]:
        self._load_until(name)
        return super().get(name)

    def names(self, pattern: str = "*") -> list[str]:
        while self._load_next():
            pass
        return super().names(pattern)

    def __contains__(self, name: str) -> bool:
        self._load_until(name)
        return super().__contains__(name)
