"""Who is calling: a bearer secret per agency, and a separate one for operators.

Each agency's secret is a file `<agency>.secret` (0600, owned by the service's user) in the
clients directory; the agency holds the same secret in its own 0600 file. Only SHA-256 digests
are kept in memory, compared in constant time against every agency (no early exit), so neither
timing nor a memory dump of this object gives a caller's secret away.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from pathlib import Path

from safehub.connection import read_secret
from safehub.errors import ConfigError

_AGENCY = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")  # the registry's party ids
SUFFIX = ".secret"


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


class Credentials:
    def __init__(self, agencies: dict[str, bytes], operator: bytes | None) -> None:
        self._agencies = dict(agencies)
        self._operator = operator

    def __repr__(self) -> str:
        return f"Credentials({len(self._agencies)} agencies)"

    @classmethod
    def from_secrets(cls, agencies: dict[str, str], operator: str | None = None) -> Credentials:
        return cls({a: _digest(s) for a, s in agencies.items()},
                   None if operator is None else _digest(operator))

    @classmethod
    def load(cls, clients: Path, operator_file: Path | None) -> Credentials:
        if not clients.is_dir():
            raise ConfigError(f"clients directory {clients} does not exist")
        agencies: dict[str, bytes] = {}
        for path in sorted(clients.glob(f"*{SUFFIX}")):
            agency = path.name.removesuffix(SUFFIX)
            if not _AGENCY.match(agency):
                raise ConfigError(f"{path}: the file name must be <agency id>{SUFFIX}")
            agencies[agency] = _digest(read_secret(path, f"bearer secret of {agency}"))
        if not agencies:
            raise ConfigError(f"clients directory {clients} has no <agency>{SUFFIX} files")
        operator = None if operator_file is None else _digest(
            read_secret(operator_file, "operator bearer secret"))
        return cls(agencies, operator)

    @property
    def agencies(self) -> frozenset[str]:
        return frozenset(self._agencies)

    def agency_for(self, token: str | None) -> str | None:
        if not token:
            return None
        offered = _digest(token)
        found = None
        for agency, expected in self._agencies.items():
            if hmac.compare_digest(offered, expected):
                found = agency
        return found

    def is_operator(self, token: str | None) -> bool:
        if not token or self._operator is None:
            return False
        return hmac.compare_digest(_digest(token), self._operator)
