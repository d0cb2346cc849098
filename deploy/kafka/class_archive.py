"""A class data sharing archive of the broker's classes, so that a broker starts faster.

A JVM that maps the archive loads Kafka's classes from it instead of from the jars. A one-node
`up` took 5.3-6.9 s with it against 8.7-13.2 s without (2 cores, under load). A killed broker's
return waits on exactly that start, and so do the demo and every test cluster.

The first broker started without an archive writes one when it is stopped in order
(`-XX:ArchiveClassesAtExit`, the JDK's own mechanism, JDK 13 and later). It writes under a name
of its own; the archive is moved into place only after a JVM has mapped it with sharing
required. This matters because a truncated archive crashes the JVM that maps it (SIGBUS, seen
here), and an archive made by another Java runtime or class path is refused. The archive in
place is checked the same way once per process before use. An archive that fails the check is
removed, and the broker starts without one, as it did before.
"""

from __future__ import annotations

import contextlib
import logging
import subprocess
import time
import uuid
from pathlib import Path

log = logging.getLogger(__name__)

ARCHIVE = "broker.jsa"
# A part older than this that still does not map was cut short (a broker killed while writing).
STALE_PART_S = 600.0
_checked: dict[tuple[str, int, int], bool] = {}


def jvm_flags(java: str, classpath: str, folder: Path, write: bool = True) -> tuple[str, ...]:
    """Flags that map the archive, or (if `write`) that write one at exit when none is ready;
    none when the folder cannot be used: the archive only speeds a start, it never stops one."""
    try:
        return _flags(java, classpath, folder, write)
    except OSError as exc:
        log.warning("broker class archive in %s unusable (%s): starting without it", folder,
                    type(exc).__name__)
        return ()


def _flags(java: str, classpath: str, folder: Path, write: bool) -> tuple[str, ...]:
    folder.mkdir(parents=True, exist_ok=True)
    _promote(java, classpath, folder)
    final = folder / ARCHIVE
    if final.exists():
        if _maps(java, classpath, final):
            return (f"-XX:SharedArchiveFile={final}",)
        log.warning("the broker class archive %s does not map on this Java runtime; removed, "
                    "and a new one is written when a broker stops", final)
        final.unlink(missing_ok=True)
    if not write:
        return ()
    return (f"-XX:ArchiveClassesAtExit={folder / f'{ARCHIVE}.{uuid.uuid4().hex}.part'}",)


def _promote(java: str, classpath: str, folder: Path) -> None:
    final = folder / ARCHIVE
    for part in sorted(folder.glob(f"{ARCHIVE}.*.part")):
        with contextlib.suppress(FileNotFoundError):  # another process promoted or removed it
            stale = time.time() - part.stat().st_mtime > STALE_PART_S
            if not final.exists() and _maps(java, classpath, part):
                part.replace(final)  # atomic: a JVM never maps a file still being written
            elif stale or (final.exists() and _maps(java, classpath, part)):
                part.unlink()


def _maps(java: str, classpath: str, archive: Path) -> bool:
    """Whether a JVM with sharing required maps the archive with this class path. A part still
    being written is cut short, so it does not."""
    st = archive.stat()
    key = (str(archive), st.st_ino, st.st_mtime_ns)
    if key not in _checked:
        try:
            done = subprocess.run(
                [java, "-Xshare:on", f"-XX:SharedArchiveFile={archive}",
                 # A cut-short archive crashes this JVM: no crash report or core in anyone's
                 # working directory.
                 "-XX:ErrorFile=/dev/null", "-XX:-CreateCoredumpOnCrash",
                 "-cp", classpath, "-version"],
                capture_output=True, check=False, timeout=60, cwd=archive.parent,
            )
            _checked[key] = done.returncode == 0
        except subprocess.TimeoutExpired:
            _checked[key] = False
    return _checked[key]
