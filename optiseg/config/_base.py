"""Strict pydantic models and the translation of their errors into one-line messages."""

from __future__ import annotations

import os
import types
import typing
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError, ValidationInfo, field_validator

from ..errors import ConfigError, did_you_mean
from ..secrets import mask_credentials


class Section(BaseModel):
    """Base of every config section: frozen, and unknown keys are errors (typos never pass silently)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_booleans_for_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        """``epochs: true`` is a mistake, not 1: a boolean never stands for a number, at any depth."""
        where = _boolean_for_number(value, cls.model_fields[info.field_name].annotation)
        if where is not None:
            raise ValueError(f"{where}a boolean is not a number; write the number")
        return value


def _boolean_for_number(value: Any, annotation: Any) -> str | None:
    """Where in ``value`` a boolean fills a place of ``annotation`` that takes numbers: ``""`` (the value
    itself), ``"item 2 is "``, ``"key 'x' is "``; ``None`` if nowhere. Nested sections check themselves."""
    options = _options(annotation)
    if isinstance(value, bool):
        numbers = any(o in (int, float) for o in options)
        return "" if numbers and not any(o in (bool, Any, object) for o in options) else None
    for option in options:
        origin, args = typing.get_origin(option), typing.get_args(option)
        if isinstance(value, (list, tuple)) and origin in (list, tuple, set, frozenset) and args:
            for index, item in enumerate(value):
                if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
                    if index >= len(args):
                        break
                    element = args[index]
                else:
                    element = args[0]
                if _boolean_for_number(item, element) is not None:
                    return f"item {index + 1} is {item!r}: "
            return None
        if isinstance(value, dict) and origin is dict and len(args) == 2:
            for key, item in value.items():
                if _boolean_for_number(item, args[1]) is not None:
                    return f"key {key!r} is {item!r}: "
            return None
    return None


def _options(annotation: Any) -> list[Any]:
    """The alternatives of a (possibly ``Annotated``, possibly optional) annotation, ``Annotated`` stripped."""
    if typing.get_origin(annotation) is typing.Annotated:
        return _options(typing.get_args(annotation)[0])
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [o for arg in typing.get_args(annotation) for o in _options(arg) if o is not type(None)]
    return [annotation]


def format_validation_error(error: ValidationError, model: type[BaseModel], source: str, prefix: str = "") -> ConfigError:
    """A :class:`ConfigError` naming the file, the key path, the bad value and (for typos) the nearest key."""
    messages = []
    for item in error.errors():
        location = [str(part) for part in item["loc"]]
        key = ".".join([*([prefix] if prefix else []), *location]) or "(top level)"
        if item["type"] == "extra_forbidden":
            valid = _valid_keys(model, item["loc"][:-1])
            messages.append(
                f"unknown key {key!r}{did_you_mean(location[-1], valid)}; valid keys here: {', '.join(sorted(valid))}"
            )
        elif item["type"] == "missing":
            messages.append(f"missing key {key!r}")
        else:
            value = item.get("input")
            if isinstance(value, str):
                value = mask_credentials(value, url=True)  # a URL's password is never echoed
            shown = "" if isinstance(value, dict) else f" = {value!r}"
            messages.append(f"{key}{shown}: {_clean(item['msg'])}")
    first, rest = messages[0], messages[1:]
    more = f" (and {len(rest)} more: {'; '.join(rest)})" if rest else ""
    return ConfigError(f"{source}: {first}{more}")


def _clean(message: str) -> str:
    return message.removeprefix("Value error, ").removeprefix("Assertion failed, ")


def _valid_keys(model: type[BaseModel], location: Iterable[Any]) -> list[str]:
    """Field names (by alias) of the sub-model at ``location`` inside ``model``."""
    current: Any = model
    for part in location:
        if isinstance(part, int):
            continue
        fields = getattr(current, "model_fields", {})
        field = next((f for name, f in fields.items() if (f.alias or name) == part), None)
        if field is None:
            return []
        current = _model_in(field.annotation)
        if current is None:
            return []
    return [(f.alias or name) for name, f in getattr(current, "model_fields", {}).items()]


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def resolve_path(value: str | Path, base_dir: Path) -> Path:
    """A path from a config file: ``~`` expanded, relative paths taken from the config file's folder."""
    path = Path(value).expanduser()
    return Path(os.path.normpath(path if path.is_absolute() else base_dir / path))


def _resolve_config_path(value: Path, info: ValidationInfo) -> Path:
    base_dir = (info.context or {}).get("base_dir") or Path.cwd()
    return resolve_path(value, Path(base_dir))


# A filesystem path in a config file; relative paths are taken from the config file's folder.
ConfigPath = Annotated[Path, AfterValidator(_resolve_config_path)]
