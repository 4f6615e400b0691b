"""One config resolver for every trainer: dataclass defaults -> profile -> YAML file -> command line.

A trainer's options are one frozen dataclass (or a few: the GANs keep the loop's and the
family's apart). :func:`resolve` builds it from the layers, later layers winning:

1. the dataclass defaults;
2. a *profile* (a named dict the trainer ships, e.g. ``smoke``, picked with :func:`pick_profile`);
3. a YAML/JSON *file* (``--config``), or an already-loaded mapping (one section of a file);
4. ``--set KEY=VALUE`` strings;
5. explicit command-line options (``None`` means "not given", as click's defaults).

Values are typed from the dataclass field types (``--set lr=1e-3`` is a float, ``lr: 1e-3`` in
YAML too, although PyYAML reads it as a string); a value that does not fit its field, or a key
that is not a field, is a one-line :class:`~mfrbench.errors.MfrbenchError` listing the valid keys
(misspelled keys are errors, not new attributes). :class:`Resolved` also says which keys a layer
above the defaults set (``given``): :class:`mfrbench.runs.RunDir` uses it to tell an option the
user asked for again on ``--resume`` from one left at its default.

:func:`to_dict` / :func:`from_dict` turn configs into JSON-ready dicts and back (strict and typed
the same way), and :func:`config_hash` is the stable 12-hex-digit hash of a config, leaving out
the fields that only steer a run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from mfrbench.errors import MfrbenchError

T = TypeVar("T")

_NONE_WORDS = ("none", "null", "~", "")
_TRUE_WORDS = ("true", "yes", "on", "1")
_FALSE_WORDS = ("false", "no", "off", "0")


@dataclass(frozen=True)
class Resolved(Generic[T]):
    """A resolved config and the keys that a layer above the dataclass defaults set."""

    config: T
    given: frozenset[str]


# ------------------------------------------------------------------------------------ layers


def pick_profile(profiles: Mapping[str, Mapping[str, Any]], name: str | None) -> dict[str, Any]:
    """The profile called ``name`` (``{}`` for ``None``); an unknown name lists the available ones."""
    if not name:
        return {}
    if name not in profiles:
        raise MfrbenchError(f"Unknown profile {name!r}. Available: {', '.join(profiles)}")
    return dict(profiles[name])


def load_file(path: str | Path | None) -> dict[str, Any]:
    """A YAML (or JSON, which is YAML) config file as a dict; ``{}`` for ``None``."""
    if path is None:
        return {}
    import yaml

    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text())
    except FileNotFoundError:
        raise MfrbenchError(f"config file {p} does not exist") from None
    except yaml.YAMLError as err:
        raise MfrbenchError(f"config file {p} is not valid YAML: {str(err).splitlines()[0]}") from err
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise MfrbenchError(f"config file {p} must hold a mapping of keys to values, got {type(data).__name__}")
    return data


def parse_sets(items: Iterable[str], *, option: str = "--set") -> dict[str, str]:
    """``["lr=0.1", "data=a,b"]`` -> ``{"lr": "0.1", "data": "a,b"}`` (values stay strings until typed)."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise MfrbenchError(f"{option}: expected KEY=VALUE, got {item!r}")
        out[key.strip().replace("-", "_")] = value.strip()
    return out


def resolve(cls: type[T], *, profile: Mapping[str, Any] | None = None, file: str | Path | Mapping | None = None,
            sets: Iterable[str] | Mapping[str, Any] = (), options: Mapping[str, Any] | None = None,
            fixed: Mapping[str, Any] | None = None, lenient_profile: bool = False,
            where: str | None = None) -> Resolved[T]:
    """Build ``cls`` from defaults -> ``profile`` -> ``file`` -> ``sets`` -> ``options`` (later wins).

    Args:
        cls: the frozen config dataclass.
        profile: the profile's values (see :func:`pick_profile`).
        file: a YAML/JSON path, or a mapping (e.g. one section of a file the caller loaded).
        sets: ``KEY=VALUE`` strings (``--set``) or a mapping of them.
        options: explicit command-line options; ``None`` values are "not given" and skipped.
        fixed: values the trainer sets itself (e.g. ``method``); not counted as given.
        lenient_profile: drop profile keys ``cls`` lacks (a profile shared by several families).
        where: what to call the config in messages (default: the class name).

    Returns:
        The config and the keys the profile, file, ``sets`` or ``options`` set.
    """
    where = where or cls.__name__
    valid = _field_names(cls)
    prof = dict(profile or {})
    if lenient_profile:
        prof = {k: v for k, v in prof.items() if k in valid}
    layers = [("profile", prof),
              ("config file", file if isinstance(file, Mapping) else load_file(file)),
              ("--set", sets if isinstance(sets, Mapping) else parse_sets(sets)),
              ("option", {k: v for k, v in (options or {}).items() if v is not None})]
    values: dict[str, Any] = {}
    for name, layer in layers:
        _check_keys(cls, layer, f"{where} ({name})")
        values.update(layer)
    given = frozenset(values)
    values.update(fixed or {})
    return Resolved(_build(cls, values, where), given)


def from_dict(cls: type[T], data: Mapping[str, Any], *, where: str | None = None) -> T:
    """Rebuild ``cls`` from a dict (a saved ``config.json``): unknown keys are errors, values typed."""
    where = where or cls.__name__
    _check_keys(cls, data, where)
    return _build(cls, dict(data), where)


def to_dict(cfg: Any) -> Any:
    """A config (dataclass, or a dict of dataclasses and plain values) as JSON-ready data (tuples -> lists)."""
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, Mapping):
        return {str(k): to_dict(v) for k, v in cfg.items()}
    if isinstance(cfg, (list, tuple)):
        return [to_dict(v) for v in cfg]
    if isinstance(cfg, Path):
        return str(cfg)
    return cfg


def flat_fields(cfg: Any) -> dict[str, Any]:
    """A typed config's fields by (dotted) name: ``{"train.lr": ..., "model.ngf": ..., "profile": ...}``.

    ``cfg`` is a dataclass (its fields) or a mapping whose dataclass values are sections.
    """
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        return {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}
    out: dict[str, Any] = {}
    for k, v in cfg.items():
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            out.update({f"{k}.{name}": x for name, x in flat_fields(v).items()})
        else:
            out[k] = v
    return out


def rebuild_like(template: T, data: Mapping[str, Any], *, where: str = "saved config") -> T:
    """``data`` (JSON) typed like ``template``: a dataclass, or a mapping with dataclass sections."""
    if dataclasses.is_dataclass(template):
        return from_dict(type(template), data, where=where)
    out = dict(data)
    for k, v in template.items():
        if dataclasses.is_dataclass(v) and k in data:
            out[k] = from_dict(type(v), data[k], where=f"{where} [{k}]")
    return out


def config_hash(cfg: Any, *, exclude: Collection[str] = ()) -> str:
    """12 hex digits identifying what ``cfg`` trains: canonical JSON of its fields less ``exclude``.

    ``exclude`` names top-level keys, or dotted keys (``train.log_every``) of a nested config.
    Stable across Python runs and key order (sorted keys, tuples as lists).
    """
    d = to_dict(cfg)
    top = {k: v for k, v in d.items() if k not in exclude}
    dotted = [e for e in exclude if "." in e]
    for key in dotted:
        section, _, name = key.partition(".")
        if isinstance(top.get(section), dict):
            top[section] = {k: v for k, v in top[section].items() if k != name}
    return hashlib.sha1(json.dumps(top, sort_keys=True, default=str).encode()).hexdigest()[:12]


# ----------------------------------------------------------------------------------- typing


def _field_names(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls) if f.init}


def _check_keys(cls: type, data: Mapping[str, Any], where: str) -> None:
    valid = _field_names(cls)
    unknown = sorted(set(data) - valid)
    if unknown:
        raise MfrbenchError(f"unknown {where} keys {unknown}; valid keys: {', '.join(sorted(valid))}")


def _build(cls: type[T], values: dict[str, Any], where: str) -> T:
    hints = typing.get_type_hints(cls)
    typed = {k: coerce(v, hints.get(k, Any), f"{where}: {k}") for k, v in values.items()}
    try:
        return cls(**typed)
    except (TypeError, ValueError) as err:
        raise MfrbenchError(f"{where}: {err}") from err


def coerce(value: Any, tp: Any, what: str = "value") -> Any:
    """``value`` as type ``tp`` (a field annotation): strings are parsed, lists become tuples.

    >>> coerce("1e-3", float), coerce("a,b", tuple[str, ...]), coerce("none", int | None)
    (0.001, ('a', 'b'), None)
    >>> coerce([1, 2], tuple[float, ...]), coerce('{"s": 16}', dict[str, float])
    ((1.0, 2.0), {'s': 16.0})
    """
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        non_none = [a for a in args if a is not type(None)]
        if type(None) in args and (value is None or (isinstance(value, str) and value.strip().lower() in _NONE_WORDS)):
            return None
        errors = []
        for a in non_none:
            try:
                return coerce(value, a, what)
            except MfrbenchError as err:
                errors.append(err)
        raise errors[0] if errors else MfrbenchError(f"{what}: expected {_name(tp)}, got {value!r}")
    if value is None:
        raise MfrbenchError(f"{what}: expected {_name(tp)}, got None")
    if origin in (tuple, list):
        items = _as_sequence(value, what)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(items) != len(args):
                raise MfrbenchError(f"{what}: expected {len(args)} values ({_name(tp)}), got {value!r}")
            out = [coerce(v, a, what) for v, a in zip(items, args)]
        else:
            out = [coerce(v, args[0] if args else Any, what) for v in items]
        return tuple(out) if origin is tuple else out
    if origin is dict or tp is dict:
        d = _as_mapping(value, what)
        kt, vt = args if args else (Any, Any)
        return {coerce(k, kt, what): coerce(v, vt, what) for k, v in d.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE_WORDS + _FALSE_WORDS:
            return value.strip().lower() in _TRUE_WORDS
        raise MfrbenchError(f"{what}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise MfrbenchError(f"{what}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip().replace("_", ""))
            except ValueError:
                pass
        raise MfrbenchError(f"{what}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value.strip())
            except ValueError:
                pass
        raise MfrbenchError(f"{what}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, (str, int, float, Path)) and not isinstance(value, bool):
            return str(value)
        raise MfrbenchError(f"{what}: expected a string, got {value!r}")
    return value


def _as_sequence(value: Any, what: str) -> list:
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, str):
        s = value.strip()
        if s.startswith("["):
            try:
                return list(json.loads(s))
            except json.JSONDecodeError as err:
                raise MfrbenchError(f"{what}: cannot read {value!r} as a list: {err}") from None
        return [x.strip() for x in s.split(",")] if s else []
    return [value]


def _as_mapping(value: Any, what: str) -> dict:
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, str):
        s = value.strip()
        try:
            d = json.loads(s) if s.startswith("{") else dict(kv.split(":", 1) for kv in s.split(",") if kv.strip())
        except (ValueError, json.JSONDecodeError):
            d = None
        if isinstance(d, dict):
            return {str(k).strip(): v.strip() if isinstance(v, str) else v for k, v in d.items()}
    raise MfrbenchError(f"{what}: expected a mapping such as {{\"s\": 64}} or s:64,m:0.5, got {value!r}")


def _name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")
