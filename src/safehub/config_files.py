"""The project's TOML configuration files (the agency registry, topics, routing table, users,
column mappings) are read one way: UTF-8, as TOML requires, and any failure to read or parse
one is a ConfigError that names the file."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from safehub.errors import ConfigError


def read_toml(path: Path, what: str = "") -> dict[str, Any]:
    """The file's content; `what` names the kind of file in the error ("column mapping")."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        named = f"{what} {path}" if what else str(path)
        raise ConfigError(f"{named}: {exc}") from exc
