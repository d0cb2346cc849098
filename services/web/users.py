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
import threading
from collections import OrderedDict, deque
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from safehub.config_files import read_toml
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
    raw = read_toml(path)
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


class SignInThrottle:
    """Refuses sign-in attempts for a user ref, or from a client address, that has failed too
    often lately, so that guessing costs the guesser time and costs the server no scrypt (each
    check is 16 MiB of memory). Pure: the caller passes the time (seconds, monotonic).

    A ref is limited wherever it is tried from (a spread-out guess at one account); an address
    is limited whatever refs it tries (one guesser sweeping accounts). Addresses get a higher
    limit because an office behind one NAT address shares it. Unknown refs are counted like
    known ones: otherwise a 429 would tell a guesser which refs exist.

    Memory is bounded: each key keeps at most its limit of failure times, and at most
    `max_keys` keys are kept, the least recently failed dropped first (a flood of made-up refs
    can push out an old entry, but not from one address: that address is stopped first).
    """

    _KEY_CHARS = 64  # refs and agencies are slugs of at most 64: a longer one is never valid

    def __init__(self, per_user: int = 5, per_address: int = 20, window_s: float = 900.0,
                 max_keys: int = 10_000) -> None:
        self.per_user = per_user
        self.per_address = per_address
        self.window_s = window_s
        self.max_keys = max_keys
        self._failures: OrderedDict[tuple[str, str], deque[float]] = OrderedDict()
        # Sign-ins run on the server's thread pool.
        self._lock = threading.Lock()

    def _keys(self, ref: str, address: str) -> tuple[tuple[tuple[str, str], int], ...]:
        return ((("user", ref[:self._KEY_CHARS]), self.per_user),
                (("address", address[:self._KEY_CHARS]), self.per_address))

    def allowed(self, ref: str, address: str, now: float) -> bool:
        with self._lock:
            for key, limit in self._keys(ref, address):
                times = self._failures.get(key)
                # Full and its oldest kept failure still recent: `limit` failures in the window.
                if times is not None and len(times) >= limit and now - times[0] < self.window_s:
                    return False
            return True

    def failed(self, ref: str, address: str, now: float) -> None:
        with self._lock:
            for key, limit in self._keys(ref, address):
                times = self._failures.get(key)
                if times is None:
                    times = self._failures[key] = deque(maxlen=limit)
                times.append(now)
                self._failures.move_to_end(key)
            while len(self._failures) > self.max_keys:
                self._failures.popitem(last=False)

    def succeeded(self, ref: str) -> None:
        """The right password: the user's own earlier mistakes no longer count against them
        (the address's do: one valid account must not reset a sweep of others)."""
        with self._lock:
            self._failures.pop(("user", ref[:self._KEY_CHARS]), None)

    def size(self) -> int:
        with self._lock:
            return len(self._failures)
