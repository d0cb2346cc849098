"""The table of every SAFEHUB_* variable (docs/settings.md), made from the settings classes so
that it cannot drift from what the services read."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from safehub.settings.agency import CorrelatorEnv, DemoEnv, LinkageKeyEnv, PublishEnv, ReidEnv
from safehub.settings.common import HealthEnv, KafkaEnv, LogEnv, PlacesEnv, TopicsEnv
from safehub.settings.hub import AuditEnv, InboxEnv, RegistryEnv, RouterEnv, WebEnv
from safehub.settings.loader import default_of, specs

# (who reads it, class), in the table's order.
CLASSES: tuple[tuple[str, type[Any]], ...] = (
    ("every service (Kafka)", KafkaEnv),
    ("every service", TopicsEnv),
    ("every service (health)", HealthEnv),
    ("every service (logs)", LogEnv),
    ("command line tools", PlacesEnv),
    ("router", RouterEnv),
    ("inbox", InboxEnv),
    ("web", WebEnv),
    ("audit", AuditEnv),
    ("deadletter, reid, access", RegistryEnv),
    ("publish", PublishEnv),
    ("publish (version 1 keys)", LinkageKeyEnv),
    ("reid", ReidEnv),
    ("correlator", CorrelatorEnv),
    ("demo", DemoEnv),
)

_ROOT = Path(__file__).resolve().parents[3]
HEADER = """# Settings

Every `SAFEHUB_*` variable the services read, generated from the settings classes in
`src/safehub/settings/` by `python -m safehub.settings > docs/settings.md` (a unit test checks
that this file is current). An empty variable counts as unset. A bad value stops the service
at start with a `ConfigError` naming the variable and its rule; a secret's value is never
shown. Flags of a command, where it has them, win over these.

| Variable | Read by | Value | Default | Meaning |
|---|---|---|---|---|
"""


def _default(value: Any) -> str:
    if value is None or value == () or value == "":
        return "-"
    if isinstance(value, Path) and value.is_absolute():
        with contextlib.suppress(ValueError):  # a path outside the project stays absolute
            value = value.relative_to(_ROOT)
    return f"`{value}`"


def markdown() -> str:
    rows = []
    for who, cls in CLASSES:
        for f, spec in specs(cls):
            default = spec.shown or _default(default_of(f))
            doc = spec.doc.replace("<", "\\<")  # <hub>: a placeholder, not an HTML tag
            rows.append(f"| `{spec.name}` | {who} | {spec.kind.rule} | {default} | {doc} |")
    return HEADER + "\n".join(rows) + "\n"
