"""The one root error type. Adapters translate library errors into these."""


class SafehubError(Exception):
    """Anything safehub reports as a clear, user-facing failure."""


class ConfigError(SafehubError):
    """A setting, key file or rules file is missing or invalid."""


class ValidationError(SafehubError):
    """Input broke the contract. `field` and `rule` say where and what, never the value."""

    def __init__(self, field: str, rule: str, detail: str = "") -> None:
        self.field = field
        self.rule = rule
        self.detail = detail
        text = f"{field}: {rule}"
        if detail:
            text += f" ({detail})"
        super().__init__(text)


class BrokerError(SafehubError):
    """Kafka could not be reached, started, or did not acknowledge."""


class StoreError(SafehubError):
    """A database operation failed."""
