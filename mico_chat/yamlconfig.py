"""YAML configs as typed dataclasses, with dotted ``key=value`` overrides from the command line.

The loader behind ``mico-chat train`` (:mod:`mico_chat.training.config`) and ``mico-chat
pretrain`` (:mod:`mico_chat.pretraining.config`). A config is a tree of dataclasses whose fields
are annotated with ``bool``, ``int``, ``float``, ``str``, ``dict``, ``list[...]``, ``Literal[...]``,
unions (``int | None``, ``bool | str``) or another dataclass; YAML is read into that tree::

    cfg = build_config(TrainConfig, {"train": {"learning_rate": 1e-4}}, ["train.max_steps=10"])

Rules, the same for every config:

- Overrides use dotted keys and YAML values: ``train.learning_rate=1e-4``,
  ``data.train=[a.jsonl,b.jsonl]``; a number indexes a list (``data.datasets.0.ratio=2``).
- Unknown keys and wrong types raise, naming the key and the file; nothing is silently dropped or
  converted where meaning could be lost (``1`` is not ``true``; ``1`` is a fine ``1.0``).
- A single value where a list is expected is a one-item list (``data.train=x.jsonl``).
- ``???`` (:data:`REQUIRED`) marks a value the user must set; it may stand anywhere (a field, a
  list item, a ``dict`` entry) and loading fails listing every one still unset.
- A dataclass may name a field as its scalar shorthand with ``yaml_shorthand: ClassVar[str] =
  "name"``: then ``stage: stage1_align`` means ``stage: {name: stage1_align}``, in the YAML and
  in overrides (``stage=new_modality stage.modalities=[depth]``).

Errors are :class:`~mico_chat.errors.ConfigError`, or the subclass a caller passes as ``error``.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from .errors import ConfigError

REQUIRED = "???"
"""The value that marks what the user must set before a config can be used."""

C = TypeVar("C")


class YamlConfig:
    """Base of a top-level config dataclass: how it is written back (``to_dict``, ``to_yaml``)."""

    def to_dict(self) -> dict[str, Any]:
        """The config as plain dicts and lists; :func:`build_config` reads it back unchanged."""
        return dataclasses.asdict(self)  # type: ignore[call-overload]  # subclasses are dataclasses

    def to_yaml(self) -> str:
        """The config as YAML, fields in declaration order."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


# ----------------------------------------------------------------------------------------- reading
def read_yaml(path: str | os.PathLike, error: type[ConfigError] = ConfigError) -> dict[str, Any]:
    """The mapping in the YAML file ``path`` (an empty file is ``{}``); raises ``error`` naming it."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{path}: no such config file")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise error(f"{path}: not valid YAML ({err})") from None
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise error(f"{path}: the config must be a mapping of sections, got {type(data).__name__}")
    return _plain(data)


def build_config(
    cls: type[C],
    data: Mapping[str, Any],
    overrides: Sequence[str] = (),
    *,
    source: str = "config",
    error: type[ConfigError] = ConfigError,
    validate: Callable[[C, str], None] | None = None,
) -> C:
    """Build the dataclass ``cls`` from ``data`` plus ``key=value`` overrides, then check it.

    Args:
        cls: the top-level config dataclass.
        data: its sections as plain mappings (a YAML document, or ``config.to_dict()``).
        overrides: ``"dotted.key=yaml value"`` strings, applied in order after ``data``.
        source: what the config came from (the file), prefixed to every error message.
        error: the :class:`ConfigError` subclass to raise.
        validate: cross-field checks, called as ``validate(config, source)`` once types are
            right and no :data:`REQUIRED` value is left.

    Returns:
        An instance of ``cls``; ``data`` is not modified.
    """
    try:
        tree = _plain(data)
        for text in overrides:
            key, value = parse_override(text)
            set_override(tree, cls, key, value)
        config = _build(cls, tree, "")
        missing = missing_values(config)
        if missing:
            examples = " ".join(f"{k}=..." for k in missing)
            raise ConfigError(f"required value(s) not set: {', '.join(missing)} (add {examples} to the command)")
    except ConfigError as err:
        raise error(f"{source}: {err}") from None
    if validate is not None:
        validate(config, source)
    return config


# --------------------------------------------------------------------------------------- overrides
def parse_override(text: str, error: type[ConfigError] = ConfigError) -> tuple[str, Any]:
    """``"train.learning_rate=1e-4"`` -> ``("train.learning_rate", 1e-4)``, the value read as YAML.

    Each dotted part is a field name or a list index (``data.datasets.0.ratio=2``); an empty value
    (``key=``) is the empty string. Raises ``error`` when the text is not ``key=value``.
    """
    if "=" not in text:
        raise error(f"override {text!r} must look like key=value (e.g. train.max_steps=10)")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not (part.isidentifier() or part.isdigit()) for part in key.split(".")):
        raise error(f"override {text!r}: {key!r} is not a dotted config key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as err:
        raise error(f"override {text!r}: the value is not valid YAML ({err})") from None
    return key, value


def set_override(tree: dict[str, Any], cls: type, key: str, value: Any) -> None:
    """Set the dotted ``key`` of the plain ``tree`` (to be built into ``cls``) to ``value``.

    Missing sections are created; a number indexes an existing list item. ``cls`` says where a
    scalar shorthand (``stage: x``) must first become its section (``{name: x}``). Type checks
    are left to building, so a wrong key is reported the same way as one in the YAML.
    """
    parts = key.split(".")
    node: Any = tree
    hint: Any = cls
    for i, part in enumerate(parts):
        here = ".".join(parts[:i])
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(f"cannot set {key}: {here} has no item {part} (it has {len(node)})")
            slot: int | str = int(part)
            hint = _item_hint(hint)
        elif isinstance(node, dict):
            slot = part
            hint = _field_hint(hint, part)
        else:
            raise ConfigError(f"cannot set {key}: {here} is not a section")
        if i == len(parts) - 1:
            node[slot] = value
            return
        child = node[slot] if isinstance(node, list) else node.get(part)
        shorthand = _shorthand(hint)
        if child is None:
            child = {}
        elif shorthand and not isinstance(child, (Mapping, list)):
            child = {shorthand: child}
        node[slot] = child
        node = child


def _section(hint: Any) -> type | None:
    """The dataclass that ``hint`` (or its non-``None`` union member) names, if any."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return next((_section(h) for h in typing.get_args(hint) if _section(h) is not None), None)
    return hint if isinstance(hint, type) and dataclasses.is_dataclass(hint) else None


def _field_hint(hint: Any, name: str) -> Any:
    cls = _section(hint)
    if cls is None or name not in {f.name for f in dataclasses.fields(cls)}:
        return Any
    return typing.get_type_hints(cls)[name]


def _item_hint(hint: Any) -> Any:
    for option in typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,):
        if typing.get_origin(option) is list:
            return typing.get_args(option)[0]
    return Any


def _shorthand(hint: Any) -> str | None:
    cls = _section(hint)
    return getattr(cls, "yaml_shorthand", None) if cls is not None else None


# ---------------------------------------------------------------------------------------- building
def coerce(value: Any, hint: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``hint``; convert only where no meaning is lost.

    ``key`` is the dotted name used in errors (:class:`ConfigError`). Dataclass hints are built
    from mappings (unknown keys rejected); :data:`REQUIRED` passes any type, to be reported by
    :func:`missing_values` once the overrides had their chance to set it.
    """
    origin = typing.get_origin(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        options = [o for o in typing.get_args(hint) if o is not type(None)]
        if value is None:
            if len(options) < len(typing.get_args(hint)):
                return None
            raise ConfigError(f"{key} may not be null")
        errors = []
        for option in options:
            try:
                return coerce(value, option, key)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{key}: {value!r} fits none of {hint}")
    if value == REQUIRED:
        return value
    if origin is Literal:
        choices = typing.get_args(hint)
        # bool == int in Python: keep `true` from passing as the choice 1
        if any(value == c and type(value) is type(c) for c in choices):
            return value
        raise ConfigError(f"{key} must be one of {', '.join(map(str, choices))}, got {value!r}")
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key} must be true or false, got {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key} must be an integer, got {value!r}")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass  # not a number either: the ConfigError below names the key and the value
        raise ConfigError(f"{key} must be a number, got {value!r}")
    if hint is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key} must be a string, got {value!r}")
    if origin is list or hint is list:
        (item,) = typing.get_args(hint) or (Any,)
        items = [value] if isinstance(value, (str, Mapping)) else value
        if not isinstance(items, Sequence):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        return [coerce(x, item, f"{key}.{i}") for i, x in enumerate(items)]
    if origin is dict or hint is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key} must be a mapping, got {value!r}")
        return dict(value)
    if _section(hint) is not None:
        return _build(hint, value, key)
    raise TypeError(f"unsupported config annotation {hint!r} for {key}")  # a bug in the config class


def _build(cls: type, data: Any, prefix: str) -> Any:
    """An instance of the dataclass ``cls`` from the mapping ``data`` (missing fields: defaults)."""
    shorthand = getattr(cls, "yaml_shorthand", None)
    if shorthand and data is not None and not isinstance(data, (Mapping, list)):
        data = {shorthand: data}
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{prefix or 'the config'} must be a mapping, got {data!r}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ConfigError(
            f"unknown config key(s) {', '.join(where + str(k) for k in unknown)}; known in "
            f"{prefix or 'the top level'}: {', '.join(sorted(known))}"
        )
    hints = typing.get_type_hints(cls)
    return cls(
        **{name: coerce(value, hints[name], f"{prefix}.{name}" if prefix else name) for name, value in data.items()}
    )


def missing_values(value: Any, prefix: str = "") -> list[str]:
    """Dotted keys of every :data:`REQUIRED` value left in a built config (list items by index)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        items: Any = ((f.name, getattr(value, f.name)) for f in dataclasses.fields(value))
    elif isinstance(value, Mapping):
        items = value.items()
    elif isinstance(value, list):
        # a list of plain values is reported as a whole (`data.train`, set by `data.train=x.jsonl`)
        if REQUIRED in value:
            return [prefix.rstrip(".")]
        items = enumerate(value)
    else:
        return [prefix.rstrip(".")] if value == REQUIRED else []
    return [key for name, item in items for key in missing_values(item, f"{prefix}{name}.")]


def _plain(data: Any) -> Any:
    """A deep copy of ``data`` with string keys (YAML may read a key as a number or a bool)."""
    if isinstance(data, Mapping):
        return {str(k): _plain(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_plain(v) for v in data]
    return data
