"""Where a producer's keys come from: the key service, version 1's HMAC key, or both while a
deployment migrates; and the epochs (current, and the one a rotation moves to).

Settings (flags of `safehub publish` override them):
- SAFEHUB_KEYSERVICE_URL (https://), SAFEHUB_KEYSERVICE_SECRET_FILE (the agency's bearer
  secret, 0600), SAFEHUB_KEYSERVICE_CA_FILE: the key service, which then derives every epoch.
- SAFEHUB_KEY_EPOCH: the current match-key epoch (else SAFEHUB_LINKAGE_KEY_EPOCH, else 1);
  SAFEHUB_KEY_TRANSITION_EPOCH: during a rotation, the epoch being moved to.
- Version 1: SAFEHUB_LINKAGE_KEY_FILE / SAFEHUB_LINKAGE_KEY (hex), whose epoch is
  SAFEHUB_LINKAGE_KEY_EPOCH (else the current epoch without a key service, 1 beside one).
  Without a key service it derives the current epoch and the linkage block exactly as version 1
  did; SAFEHUB_LINKAGE_TRANSITION_KEY_FILE is the HMAC key of the transition epoch (after an
  HMAC-only rotation: of the current epoch, the version 1 key staying for the block). With a
  key service it is used only for the epochs SAFEHUB_HMAC_EPOCHS lists ("0,1": the block and
  epoch 1), so that events of an HMAC deployment keep linking while it moves to the service.

The linkage block is derived under epoch 0, which a match-key rotation does not touch; moving
the block from HMAC to the key service (or rotating the block key) changes every child's block
and is a separate procedure: a full re-partition of the correlator's state by replay.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from safehub.errors import ConfigError
from safehub.producers.keying import (
    BLOCK_EPOCH,
    ByEpoch,
    CachingPRF,
    HmacPRF,
    KeyedPRF,
    Keying,
)
from safehub.producers.linkagekey import ENV_KEY_FILE, LinkageKey, load_linkage_key
from safehub.settings import LinkageKeyEnv, PublishEnv, load

ENV_URL = "SAFEHUB_KEYSERVICE_URL"
ENV_SECRET = "SAFEHUB_KEYSERVICE_SECRET_FILE"
ENV_CA = "SAFEHUB_KEYSERVICE_CA_FILE"
ENV_KEY_EPOCH = "SAFEHUB_KEY_EPOCH"
ENV_TRANSITION = "SAFEHUB_KEY_TRANSITION_EPOCH"
ENV_TRANSITION_KEY_FILE = "SAFEHUB_LINKAGE_TRANSITION_KEY_FILE"
ENV_HMAC_EPOCHS = "SAFEHUB_HMAC_EPOCHS"
KEYSERVICE_BATCH = 8192  # inputs per call into the client, which splits and pipelines them


@dataclass(frozen=True, slots=True)
class KeyService:
    url: str
    secret_file: Path
    ca_file: Path


@dataclass(frozen=True, slots=True)
class KeySource:
    epoch: int
    transition_epoch: int | None
    keyservice: KeyService | None
    hmac: dict[int, LinkageKey]  # epoch asked -> HMAC key; empty without version 1 keys

    def __repr__(self) -> str:
        return (f"KeySource(epoch={self.epoch}, transition_epoch={self.transition_epoch}, "
                f"keyservice={self.keyservice!r}, hmac_epochs={sorted(self.hmac)})")

    def open(self) -> tuple[Keying, Callable[[], None]]:
        """The keying, and what closes it (the key service's connections)."""
        hmac_prf = HmacPRF(self.hmac) if self.hmac else None
        if self.keyservice is None:
            assert hmac_prf is not None
            return Keying(hmac_prf, self.epoch, self.transition_epoch), lambda: None
        from safehub.services.keyservice.client import KeyServiceClient

        ks = self.keyservice
        client = KeyServiceClient(ks.url, ks.secret_file, ks.ca_file)
        client.start_workers()
        prf: KeyedPRF = CachingPRF(client)
        if hmac_prf is not None:
            epochs = {BLOCK_EPOCH, self.epoch, *([self.transition_epoch]
                                                 if self.transition_epoch else [])}
            prf = ByEpoch({e: hmac_prf if e in self.hmac else prf for e in epochs})
        return (Keying(prf, self.epoch, self.transition_epoch, KEYSERVICE_BATCH),
                client.close)


def _int(value: str | int | None, name: str) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"{name} must be an integer") from None


def key_source(
    env: Mapping[str, str], *, epoch: int | None = None, transition_epoch: int | None = None,
    url: str | None = None, secret_file: str | None = None, ca_file: str | None = None,
    key_file: str | None = None, transition_key_file: str | None = None,
    hmac_epochs: str | None = None,
) -> KeySource:
    """The settings from flags (the keyword arguments) over SAFEHUB_* variables."""
    given, v1_given = load(PublishEnv, env), load(LinkageKeyEnv, env)
    current = epoch if epoch is not None else (given.key_epoch or v1_given.epoch or 1)
    moving_to = transition_epoch if transition_epoch is not None else given.transition_epoch
    hmac_file = Path(key_file) if key_file else None
    service_url = url or given.keyservice_url
    keyservice = None
    if service_url:
        secret = secret_file or given.keyservice_secret_file
        ca = ca_file or given.keyservice_ca_file
        if not secret or not ca:
            raise ConfigError(f"the key service needs its bearer secret file ({ENV_SECRET}, "
                              f"--keyservice-secret) and CA ({ENV_CA}, --keyservice-ca)")
        keyservice = KeyService(service_url, Path(secret), Path(ca))
    hmac: dict[int, LinkageKey] = {}
    if keyservice is None or hmac_epochs or given.hmac_epochs:
        # Version 1's --key-epoch was the linkage key's; beside a key service it is epoch 1
        # unless said otherwise.
        linkage_epoch = v1_given.epoch or (
            current if keyservice is None else 1)
        v1 = load_linkage_key(hmac_file, env, linkage_epoch)
        hmac = {v1.epoch: v1, BLOCK_EPOCH: v1}  # version 1's bytes for both
        # The HMAC key of the epoch being moved to; after an HMAC-only rotation, of the
        # current epoch, while the version 1 key stays for the block.
        other_file = transition_key_file or given.transition_key_file
        other_epoch = moving_to if moving_to is not None else (
            current if current != v1.epoch else None)
        if other_file and other_epoch is not None:
            hmac[other_epoch] = load_linkage_key(Path(other_file), {}, other_epoch)
        if keyservice is not None:
            listed = hmac_epochs or given.hmac_epochs or ""
            wanted = {_int(e.strip(), ENV_HMAC_EPOCHS) for e in listed.split(",") if e.strip()}
            unknown = wanted - set(hmac)
            if unknown:
                raise ConfigError(f"{ENV_HMAC_EPOCHS}: no HMAC key for epoch(s) "
                                  f"{sorted(e for e in unknown if e is not None)}")
            hmac = {e: k for e, k in hmac.items() if e in wanted}
    needed = {BLOCK_EPOCH, current, *([moving_to] if moving_to is not None else [])}
    if keyservice is None and not needed <= set(hmac):
        raise ConfigError(f"no HMAC linkage key for epoch(s) {sorted(needed - set(hmac))}: "
                          f"set {ENV_KEY_FILE} and {ENV_TRANSITION_KEY_FILE}, or use the key "
                          f"service ({ENV_URL})")
    source = KeySource(current, moving_to, keyservice, hmac)
    Keying(HmacPRF({}), current, moving_to)  # the epochs' own checks, before anything opens
    return source
