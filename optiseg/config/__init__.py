"""The study configuration: one YAML file, validated up front.

``load_config(path)`` reads and validates the whole file; every error names
the file, the key path, the bad value and, for typos, the nearest valid key.
Sections are frozen pydantic models; relative paths in them are resolved
against the config file's folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from .._paths import input_problem, output_problem, read_regular, shown
from ..errors import ConfigError
from ._base import ConfigPath, Section, format_validation_error, resolve_path
from ._edit import write_section
from .confirm import ConfirmConfig
from .data import SYNTHETIC_CLASSES, DataConfig, SyntheticData
from .device import DeviceConfig, MeasureSettings, SSHHost
from .fidelity import FidelityConfig
from .link import LinkConfig
from .study import EFFORTS, Budget, Constraints, Quantization, StudyConfig, parse_duration
from .training import AugmentConfig, ExitTrainingConfig, TrainingConfig, check_batch_size

__all__ = [
    "EFFORTS",
    "SYNTHETIC_CLASSES",
    "AugmentConfig",
    "Budget",
    "ConfigPath",
    "ConfirmConfig",
    "Constraints",
    "Quantization",
    "DataConfig",
    "DeviceConfig",
    "FidelityConfig",
    "ExitTrainingConfig",
    "LinkConfig",
    "LoadedConfig",
    "MeasureSettings",
    "SSHHost",
    "Section",
    "StudyConfig",
    "SyntheticData",
    "TrainingConfig",
    "check_batch_size",
    "load_config",
    "parse_duration",
    "read_yaml",
    "resolve_path",
    "write_section",
]


@dataclass(frozen=True)
class LoadedConfig:
    path: Path
    config: StudyConfig
    raw: dict[str, Any]

    @property
    def study_name(self) -> str:
        return self.config.study or self.path.stem

    @property
    def study_folder(self) -> Path:
        """``<output>/<study>``: where the study's files go."""
        return self.config.output / self.study_name


class _DuplicateKey(Exception):
    def __init__(self, key: Any, first: str, second: str):
        super().__init__(key)
        self.key, self.first, self.second = key, first, second


class _StrictLoader(yaml.SafeLoader):
    """A safe loader that refuses a key written twice in one mapping (PyYAML keeps the last one silently).

    Keys brought in by a merge (``<<: *anchor``) may be overridden, as YAML intends; two keys that Python
    holds equal (``1`` and ``true``) are the same key, since one would silently replace the other.
    """

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, str] = {}
            for key_node, _ in node.value:
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                line = f"line {key_node.start_mark.line + 1}, column {key_node.start_mark.column + 1}"
                if key in seen:
                    raise _DuplicateKey(key, seen[key], line)
                seen[key] = line
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: str | Path) -> dict[str, Any]:
    """The mapping at the top of a YAML file, or a :class:`ConfigError` saying what is wrong and where."""
    path = Path(path)
    problem = input_problem(path)
    if problem is not None:
        raise ConfigError(f"config file {problem}", hint="check the path; examples/ has ready configs")
    try:
        raw = yaml.load(read_regular(path).decode("utf-8"), Loader=_StrictLoader)
    except _DuplicateKey as exc:
        raise ConfigError(
            f"{path}: {exc.second}: key {exc.key!r} appears twice in one mapping (first on {exc.first}); "
            "YAML would silently keep the last one",
            hint="keep one of the two",
        ) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise ConfigError(f"{where}: invalid YAML: {exc.problem}") from None
    except (yaml.YAMLError, UnicodeDecodeError, OSError) as exc:
        raise ConfigError(f"{path}: cannot read the YAML: {exc}") from None
    if raw is None:
        raise ConfigError(f"{path} is empty", hint="see examples/quickstart.yaml for a complete config")
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys (data:, model:, ...), not {type(raw).__name__}")
    return raw


def load_config(path: str | Path, overrides: dict[str, Any] | None = None, *, for_search: bool = False) -> LoadedConfig:
    """Read and validate a study file. ``overrides`` replace top-level keys (e.g. from the command line).

    ``for_search=True`` also checks what only a search reads or writes (the ``warm_start`` study exists, the
    study folder ``<output>/<study>`` can be made and written in), so a search refuses a bad config before it
    makes anything; reading a finished study does not need it.
    """
    raw = {**read_yaml(Path(path).expanduser()), **(overrides or {})}  # a broken link is named as the user wrote it
    path = Path(path).expanduser().resolve()
    try:
        config = StudyConfig.model_validate(raw, context={"base_dir": path.parent, "for_search": for_search})
    except ValidationError as exc:
        raise format_validation_error(exc, StudyConfig, str(path)) from None
    loaded = LoadedConfig(path=path, config=config, raw=raw)
    problem = output_problem(loaded.study_folder, "folder") if for_search else None
    if problem is not None:
        raise ConfigError(f"{path}: output = {str(raw.get('output', 'runs'))!r}: the study folder {shown(str(loaded.study_folder))} "
                          f"cannot be written: {problem}", hint="set output: to a folder you can write in (a missing one is made)")
    return loaded
