"""Hub users, from a TOML file: each has a salted scrypt password hash and one agency.

    [[user]]
    ref = "sw-leeds-1"          # opaque staff reference, written to audit and acks
    agency = "csc-leeds"
    password = "scrypt$16384$8$1$<salt hex>$<hash hex>"   # from `safehub web --hash-password`
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from safehub.errors import ConfigError

_SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")
_N, _R, _P = 2**14, 8, 1


@dataclass(frozen=True, slots=True)
class User:
    ref: str
    agency: str
    password_hash: str


def hash_password(password: str, salt: bytes | None = None) -> str:
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    return f"scrypt${_N}${_R}${_P}${salt.hex()}${digest.hex()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, expected = stored.split("$")
        if scheme != "scrypt":
            return False
        digest = hashlib.scrypt(password.encode("utf-8"), salt=bytes.fromhex(salt), n=int(n),
                                r=int(r), p=int(p), dklen=len(expected) // 2)
    except ValueError:
        return False
    return hmac.compare_digest(digest.hex(), expected)


def parse_users(raw: Mapping[str, object], source: str = "users") -> dict[str, User]:
    users: dict[str, User] = {}
    entries = raw.get("user", [])
    if not isinstance(entries, list):
        raise ConfigError(f"{source}: [[user]] entries expected")
    for i, entry in enumerate(entries):
        try:
            user = User(str(entry["ref"]), str(entry["agency"]), str(entry["password"]))
        except (KeyError, TypeError) as exc:
            raise ConfigError(f"{source}: user #{i + 1} needs ref, agency and password") from exc
        if not _SLUG.match(user.ref) or not _SLUG.match(user.agency):
            raise ConfigError(f"{source}: user #{i + 1}: ref and agency must be slugs")
        if not user.password_hash.startswith("scrypt$"):
            raise ConfigError(f"{source}: user {user.ref}: password must be a scrypt hash")
        if user.ref in users:
            raise ConfigError(f"{source}: duplicate user {user.ref}")
        users[user.ref] = user
    return users


def load_users(path: Path) -> dict[str, User]:
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    return parse_users(raw, str(path))


class Directory:
    """Sign-in checks. Unknown users cost as much as known ones, so timing tells nothing."""

    _DUMMY = hash_password("not a password", b"\x00" * 16)

    def __init__(self, users: Mapping[str, User]) -> None:
        self._users = dict(users)

    def authenticate(self, ref: str, password: str) -> User | None:
        user = self._users.get(ref)
        ok = verify_password(password, user.password_hash if user else self._DUMMY)
        return user if ok and user is not None else None

    def get(self, ref: str) -> User | None:
        return self._users.get(ref)
