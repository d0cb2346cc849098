"""The linkage key shared by the agencies (version 1 of the design), and where it is loaded from.

The key is secret: whoever holds it can test a guessed identity against a match key. So it is
held in an object whose repr never shows it, it is never written to an event or a log, and the
errors that mention it say what is wrong with it, not what it is.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from safehub.errors import ConfigError
from safehub.settings import LinkageKeyEnv, load

MIN_KEY_BYTES = 32  # HMAC-SHA256's block of security: shorter keys make guessing cheaper
ENV_KEY = "SAFEHUB_LINKAGE_KEY"
ENV_KEY_FILE = "SAFEHUB_LINKAGE_KEY_FILE"
ENV_EPOCH = "SAFEHUB_LINKAGE_KEY_EPOCH"


@dataclass(frozen=True, slots=True)
class LinkageKey:
    secret: bytes = field(repr=False)
    epoch: int = 1

    def __post_init__(self) -> None:
        if len(self.secret) < MIN_KEY_BYTES:
            raise ConfigError(
                f"linkage key is {len(self.secret)} bytes; at least {MIN_KEY_BYTES} are needed"
            )
        if not 0 <= self.epoch < 2**31:
            raise ConfigError("linkage key epoch must be between 0 and 2^31-1")

    def __repr__(self) -> str:
        return f"LinkageKey(epoch={self.epoch}, secret=<hidden>)"

    __str__ = __repr__


def _from_hex(text: str, source: str) -> bytes:
    compact = "".join(text.split())
    try:
        return bytes.fromhex(compact)
    except ValueError:
        raise ConfigError(f"linkage key from {source} is not hexadecimal") from None


def load_linkage_key(
    key_file: Path | None = None, env: Mapping[str, str] | None = None, epoch: int | None = None
) -> LinkageKey:
    """From `key_file` (hex text), else SAFEHUB_LINKAGE_KEY_FILE, else SAFEHUB_LINKAGE_KEY (hex).

    The epoch comes from `epoch`, else SAFEHUB_LINKAGE_KEY_EPOCH, else 1.
    """
    given = load(LinkageKeyEnv, env)
    if epoch is None:
        epoch = 1 if given.epoch is None else given.epoch
    path = key_file or given.key_file
    if path is not None:
        try:
            text = path.read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read the linkage key file {path}: "
                              f"{type(exc).__name__}") from None
        return LinkageKey(_from_hex(text, f"file {path}"), epoch)
    if given.key is None:
        raise ConfigError(
            f"no linkage key: set {ENV_KEY} (hex, >= {MIN_KEY_BYTES} bytes) or "
            f"{ENV_KEY_FILE}, or pass --key-file"
        )
    return LinkageKey(_from_hex(given.key.reveal(), ENV_KEY), epoch)
