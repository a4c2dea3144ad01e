"""Strict pydantic models and the translation of their errors into one-line messages."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError, ValidationInfo, model_validator

from ..errors import ConfigError, did_you_mean


class Section(BaseModel):
    """Base of every config section: frozen, and unknown keys are errors (typos never pass silently)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _no_booleans_for_numbers(cls, data: Any) -> Any:
        """``epochs: true`` is a mistake, not 1: a boolean never stands for a number here."""
        if isinstance(data, dict):
            for name, field in cls.model_fields.items():
                value = data.get(name)
                if isinstance(value, bool) and _wants_number(field.annotation):
                    raise ValueError(f"{name} = {value!r}: a boolean is not a number; write the number")
        return data


def _wants_number(annotation: Any) -> bool:
    """Whether a field takes numbers and not booleans (int / float, optionally None, constrained or not)."""
    import typing

    if typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    args = typing.get_args(annotation) or (annotation,)
    kinds = set()
    for arg in args:
        base = typing.get_origin(arg) or arg
        if base is typing.Annotated:
            base = typing.get_args(arg)[0]
        kinds.add(base)
    kinds.discard(type(None))
    return bool(kinds) and bool not in kinds and kinds <= {int, float}


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
