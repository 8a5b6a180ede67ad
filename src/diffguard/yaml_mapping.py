"""Reading a YAML file that must hold a mapping (run configs, benchmark definitions), with one-line errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from diffguard.errors import ConfigError


def read_mapping(path: Path, kind: str, expected: str) -> dict[str, Any]:
    """The mapping in YAML file ``path``; ``kind`` names the file in errors ("config file"), ``expected`` says what
    the mapping should hold."""

    try:
        data = yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{kind} {path} is not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{kind} {path} must hold a mapping ({expected})")
    return data
