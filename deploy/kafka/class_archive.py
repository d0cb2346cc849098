"""A class data sharing archive of the broker's classes, so that a broker starts faster.

A JVM that maps the archive loads Kafka's classes from it instead of from the jars. A one-node
`up` took 5.2-6.9 s with it against 8.7-13.2 s without (2 cores, under load). A killed broker's
return waits on exactly that start, and so do the demo and every test cluster.

Node 1, started when no archive is in place, writes one when it is stopped in order
(`-XX:ArchiveClassesAtExit`, the JDK's own mechanism, JDK 13 and later). It writes under a name
of its own; the archive is moved into place only after a JVM with the broker's own flags has
mapped it with sharing required. An archive cut short (a copy interrupted, a full disk) kills
the JVM that maps it (SIGBUS, seen here); one made by another Java runtime, class path or heap
setting is refused; one whose writer was killed has no header yet and is refused too. The
archive in place is checked the same way once per process before use. An archive that fails
the check is removed, and the broker starts without one, as it did before.
"""

from __future__ import annotations

import contextlib
import logging
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

ARCHIVE = "broker.jsa"
# A part older than this that still does not map was never finished (its writer was killed).
STALE_PART_S = 600.0
_checked: dict[tuple[object, ...], bool] = {}


def jvm_flags(java: str, classpath: str, folder: Path, write: bool = True,
              vm: tuple[str, ...] = ()) -> tuple[str, ...]:
    """Flags that map the archive, or (if `write`) that write one at exit when none is ready;
    none when the folder cannot be used: the archive only speeds a start, it never stops one.
    `vm` are the flags the JVM will run with (heap, collector): they decide whether an archive
    maps (a heap over 32 GB turns compressed pointers off, and the archive no longer fits)."""
    try:
        return _flags(Check(java, classpath, vm), folder.resolve(), write)
    except OSError as exc:
        log.warning("broker class archive in %s unusable (%s): starting without it", folder,
                    type(exc).__name__)
        return ()


@dataclass(frozen=True)
class Check:
    """Whether an archive maps in a JVM started as the broker will be."""

    java: str
    classpath: str
    vm: tuple[str, ...]

    def maps(self, archive: Path) -> bool:
        """A JVM with sharing required maps it, with this class path and these flags. Its crash
        (the archive cut short) leaves no report or core file anywhere."""
        st = archive.stat()
        key = (self, str(archive), st.st_ino, st.st_mtime_ns)
        if key not in _checked:
            try:
                done = subprocess.run(
                    [self.java, *self.vm, "-Xshare:on", f"-XX:SharedArchiveFile={archive}",
                     "-XX:ErrorFile=/dev/null", "-XX:-CreateCoredumpOnCrash",
                     "-cp", self.classpath, "-version"],
                    capture_output=True, check=False, timeout=60,
                )
                _checked[key] = done.returncode == 0
            except subprocess.TimeoutExpired:
                _checked[key] = False
        return _checked[key]


def _flags(check: Check, folder: Path, write: bool) -> tuple[str, ...]:
    folder.mkdir(parents=True, exist_ok=True)
    _promote(check, folder)
    final = folder / ARCHIVE
    if final.exists():
        if check.maps(final):
            return (f"-XX:SharedArchiveFile={final}",)
        log.warning("the broker class archive %s does not map on this Java runtime; removed, "
                    "and a new one is written when node 1 stops", final)
        final.unlink(missing_ok=True)
    if not write:
        return ()
    return (f"-XX:ArchiveClassesAtExit={folder / f'{ARCHIVE}.{uuid.uuid4().hex}.part'}",)


def _promote(check: Check, folder: Path) -> None:
    final = folder / ARCHIVE
    for part in sorted(folder.glob(f"{ARCHIVE}.*.part")):
        with contextlib.suppress(FileNotFoundError):  # another process promoted or removed it
            stale = time.time() - part.stat().st_mtime > STALE_PART_S
            if not final.exists() and check.maps(part):
                part.replace(final)  # atomic: a JVM never maps a file still being written
            elif stale or (final.exists() and check.maps(part)):
                part.unlink()
