"""Strict pydantic models and the translation of their errors into one-line messages."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError, ValidationInfo

from ..errors import ConfigError, did_you_mean


class Section(BaseModel):
    """Base of every config section: frozen, and unknown keys are errors (typos never pass silently)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


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
