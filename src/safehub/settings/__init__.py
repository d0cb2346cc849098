"""Every SAFEHUB_* variable, typed, with its default and rule: `load(SomeEnv)` reads them.

Each service builds its settings in `main` from these classes (DESIGN: one typed, frozen
settings object per service) and no other module reads a SAFEHUB_* variable; the table in
docs/settings.md is made from them (`python -m safehub.settings > docs/settings.md`).
"""

from safehub.errors import ConfigError
from safehub.settings.agency import CorrelatorEnv, DemoEnv, LinkageKeyEnv, PublishEnv, ReidEnv
from safehub.settings.common import HealthEnv, KafkaEnv, LogEnv, PlacesEnv, TopicsEnv
from safehub.settings.hub import AuditEnv, InboxEnv, RegistryEnv, RouterEnv, WebEnv
from safehub.settings.loader import Secret, load

__all__ = [
    "AuditEnv", "ConfigError", "CorrelatorEnv", "DemoEnv", "HealthEnv", "InboxEnv", "KafkaEnv",
    "LinkageKeyEnv", "LogEnv", "PlacesEnv", "PublishEnv", "RegistryEnv", "ReidEnv", "RouterEnv",
    "Secret", "TopicsEnv", "WebEnv", "load",
]
