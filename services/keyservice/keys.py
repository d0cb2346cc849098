"""The service's keys: one file per epoch in a key directory, read as a secret.

A key file `epoch-<N>.json` holds `{"epoch": N, "seed": <64 hex>, "info": <hex>}`, mode 0600,
owned by the user running the service; the secret key is RFC 9497 DeriveKeyPair(seed, info),
so the RFC's own vectors can be served. Epoch 0 is the linkage-block key, never rotated with
the match keys; epochs >= 1 are match-key epochs. Destroying an epoch is deleting its file:
the directory is looked at on every request, so a deleted epoch is refused at once, without a
restart. Neither seed nor scalar is ever printed: their fields are left out of every repr.
"""

from __future__ import annotations

import json
import os
import secrets
import threading
from dataclasses import dataclass, field
from pathlib import Path

from safehub.connection import read_secret
from safehub.errors import ConfigError, ValidationError
from safehub.services.keyservice import oprf

LINKAGE_BLOCK_EPOCH = 0


def key_path(folder: Path, epoch: int) -> Path:
    return folder / f"epoch-{epoch}.json"


@dataclass(frozen=True, slots=True)
class EpochKey:
    epoch: int
    secret: bytes = field(repr=False)
    public: bytes

    def evaluate(self, blinded_element: bytes) -> bytes:
        return oprf.blind_evaluate(self.secret, blinded_element)


def parse_key_file(text: str, where: str) -> tuple[int, bytes, bytes]:
    """(epoch, seed, info) from a key file's content; errors never quote the content."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{where}: not JSON (line {exc.lineno})") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{where}: must be a JSON object with epoch, seed and info")
    epoch = doc.get("epoch")
    if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0:
        raise ConfigError(f"{where}: epoch must be an integer >= 0")
    try:
        seed = bytes.fromhex(str(doc.get("seed", "")))
        info = bytes.fromhex(str(doc.get("info", "")))
    except ValueError:
        raise ConfigError(f"{where}: seed and info must be hex") from None
    if len(seed) != oprf.SEED_BYTES:
        raise ConfigError(f"{where}: seed must be {oprf.SEED_BYTES} bytes")
    return epoch, seed, info


def load_key(path: Path) -> EpochKey:
    epoch, seed, info = parse_key_file(read_secret(path, "key file"), str(path))
    if path.name != key_path(path.parent, epoch).name:
        raise ConfigError(f"{path}: holds epoch {epoch}, so it must be named "
                          f"{key_path(path.parent, epoch).name}")
    try:
        secret, public = oprf.derive_key_pair(seed, info)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return EpochKey(epoch, secret, public)


class KeyDirectory:
    """The epochs whose key files are in `folder`, derived once per file version."""

    def __init__(self, folder: Path) -> None:
        if not folder.is_dir():
            raise ConfigError(f"key directory {folder} does not exist")
        self.folder = folder
        self._lock = threading.Lock()
        self._cache: dict[int, tuple[tuple[int, int, int], EpochKey]] = {}

    def __repr__(self) -> str:
        return f"KeyDirectory({self.folder})"

    def get(self, epoch: int) -> EpochKey | None:
        """The epoch's key, or None once its file is gone (destroyed)."""
        path = key_path(self.folder, epoch)
        try:
            st = path.stat()
        except FileNotFoundError:
            with self._lock:
                self._cache.pop(epoch, None)
            return None
        version = (st.st_ino, st.st_mtime_ns, st.st_size)
        with self._lock:
            cached = self._cache.get(epoch)
            if cached is not None and cached[0] == version:
                return cached[1]
        key = load_key(path)
        if key.epoch != epoch:  # load_key checks the name; this keeps the cache honest
            raise ConfigError(f"{path}: holds epoch {key.epoch}")
        with self._lock:
            self._cache[epoch] = (version, key)
        return key

    def epochs(self) -> list[int]:
        found = []
        for path in self.folder.glob("epoch-*.json"):
            number = path.stem.removeprefix("epoch-")
            if number.isdigit():
                found.append(int(number))
        return sorted(found)

    def check(self) -> list[int]:
        """Load every key now, so that a bad file stops the service at start, not a caller."""
        epochs = self.epochs()
        for epoch in epochs:
            self.get(epoch)
        return epochs


def write_key_file(folder: Path, epoch: int, seed: bytes | None = None,
                   info: bytes | None = None) -> Path:
    """A new key file, 0600 from creation; an existing epoch is never overwritten (a new key
    under an old epoch number would silently unlink every pseudonym made with it)."""
    if epoch < 0:
        raise ConfigError("epoch must be >= 0")
    seed = secrets.token_bytes(oprf.SEED_BYTES) if seed is None else seed
    info = f"safehub keyservice epoch {epoch}".encode() if info is None else info
    if len(seed) != oprf.SEED_BYTES:
        raise ConfigError(f"seed must be {oprf.SEED_BYTES} bytes")
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = key_path(folder, epoch)
    text = json.dumps({"epoch": epoch, "seed": seed.hex(), "info": info.hex()}) + "\n"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise ConfigError(f"{path} exists: epoch {epoch} already has a key") from None
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    return path
