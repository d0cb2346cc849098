"""The broker's class archive, on the real JVM and Kafka jars: written by one run, moved into
place only once a JVM maps it, and never handed to a broker when it is cut short or foreign.

A cut-short archive (a copy interrupted, a full disk) kills the JVM that maps it with SIGBUS
(checked below). Without the check, every broker start after that would crash."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from safehub.deploy.kafka import class_archive
from safehub.deploy.kafka.launcher import fetch_jars

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def jvm() -> tuple[str, str]:
    java = shutil.which("java")
    if java is None:
        pytest.fail("no `java` here: the Kafka broker needs a Java runtime (17 or newer)")
    return java, f"{fetch_jars()}/*"


@pytest.fixture(scope="module")
def whole_archive(jvm: tuple[str, str], tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The bytes of an archive one broker-main run wrote."""
    java, classpath = jvm
    folder = tmp_path_factory.mktemp("whole")
    _run_broker_main(java, classpath, class_archive.jvm_flags(java, classpath, folder), folder)
    (written,) = folder.glob("*.part")
    return written.read_bytes()


def _cut_short_part(whole: bytes, folder: Path) -> Path:
    """An archive cut short: its first half."""
    folder.mkdir(exist_ok=True)
    cut = folder / f"{class_archive.ARCHIVE}.cut.part"
    cut.write_bytes(whole[: len(whole) // 2])
    return cut


def _run_broker_main(java: str, classpath: str, flags: tuple[str, ...], cwd: Path) -> int:
    """kafka.Kafka without a config prints its usage and exits: enough to load and archive
    classes, or to show whether an archive maps. Run in `cwd`: a crash leaves its report there."""
    done = subprocess.run([java, *flags, "-cp", classpath, "kafka.Kafka"],
                          capture_output=True, check=False, timeout=120, cwd=cwd)
    return done.returncode


def test_one_run_writes_the_archive_and_the_next_maps_it(jvm: tuple[str, str],
                                                         tmp_path: Path) -> None:
    java, classpath = jvm
    first = class_archive.jvm_flags(java, classpath, tmp_path)
    assert len(first) == 1 and first[0].startswith("-XX:ArchiveClassesAtExit=")
    assert not (tmp_path / class_archive.ARCHIVE).exists()
    _run_broker_main(java, classpath, first, tmp_path)
    assert len(list(tmp_path.glob("*.part"))) == 1

    second = class_archive.jvm_flags(java, classpath, tmp_path)
    assert second == (f"-XX:SharedArchiveFile={tmp_path / class_archive.ARCHIVE}",)
    assert list(tmp_path.glob("*.part")) == []
    # The usage exit is status 1 with or without the archive: only a crash would differ.
    assert _run_broker_main(java, classpath, ("-Xshare:on", *second), tmp_path) == 1
    # A reader that must not write (the storage formatter) gets the archive too, or nothing.
    assert class_archive.jvm_flags(java, classpath, tmp_path, write=False) == second


def test_a_cut_short_archive_is_never_mapped_and_goes_once_stale(
        jvm: tuple[str, str], whole_archive: bytes, tmp_path: Path) -> None:
    java, classpath = jvm
    folder = tmp_path / "archives"
    cut = _cut_short_part(whole_archive, folder)
    # What the check prevents: the JVM that maps it crashes.
    assert _run_broker_main(java, classpath, (f"-XX:SharedArchiveFile={cut}",),
                            tmp_path) not in (0, 1)

    flags = class_archive.jvm_flags(java, classpath, folder, write=False)
    assert flags == ()
    assert not (folder / class_archive.ARCHIVE).exists()
    assert cut.exists(), "a recent part may still be being written: it is left alone"

    old = cut.stat().st_mtime - class_archive.STALE_PART_S - 1
    os.utime(cut, (old, old))
    assert class_archive.jvm_flags(java, classpath, folder, write=False) == ()
    assert not cut.exists()


def test_an_archive_in_place_that_does_not_map_is_removed(jvm: tuple[str, str],
                                                          tmp_path: Path) -> None:
    java, classpath = jvm
    final = tmp_path / class_archive.ARCHIVE
    final.write_bytes(b"not an archive" * 1000)
    flags = class_archive.jvm_flags(java, classpath, tmp_path)
    assert len(flags) == 1 and flags[0].startswith("-XX:ArchiveClassesAtExit=")
    assert not final.exists()


def test_checking_a_cut_short_archive_leaves_no_crash_report_behind(
        jvm: tuple[str, str], whole_archive: bytes, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    java, classpath = jvm
    folder = tmp_path / "archives"
    _cut_short_part(whole_archive, folder)
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)  # where a crashing JVM writes its report by default
    assert class_archive.jvm_flags(java, classpath, folder, write=False) == ()
    assert [p.name for p in tmp_path.rglob("*") if p.name.startswith(("hs_err", "core"))] == []


def test_a_folder_that_cannot_be_used_starts_the_broker_without_an_archive(
        jvm: tuple[str, str], tmp_path: Path) -> None:
    java, classpath = jvm
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    assert class_archive.jvm_flags(java, classpath, blocked / "class-archive") == ()


def test_an_archive_is_checked_with_the_flags_the_broker_runs_with(
        jvm: tuple[str, str], whole_archive: bytes, tmp_path: Path) -> None:
    """A heap over 32 GB turns compressed pointers off, and an archive made with them no longer
    maps: on such a host the check must refuse it for that broker, not for another setting."""
    java, classpath = jvm
    (tmp_path / class_archive.ARCHIVE).write_bytes(whole_archive)
    mapped = (f"-XX:SharedArchiveFile={tmp_path / class_archive.ARCHIVE}",)
    assert class_archive.jvm_flags(java, classpath, tmp_path, write=False) == mapped
    assert class_archive.jvm_flags(java, classpath, tmp_path, write=False,
                                   vm=("-Xmx40g",)) == ()
    assert not (tmp_path / class_archive.ARCHIVE).exists()


def test_a_relative_cache_folder_is_checked_where_it_is(
        jvm: tuple[str, str], whole_archive: bytes, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    java, classpath = jvm
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / class_archive.ARCHIVE).write_bytes(whole_archive)
    assert class_archive.jvm_flags(java, classpath, Path("cache"), write=False) == (
        f"-XX:SharedArchiveFile={tmp_path / 'cache' / class_archive.ARCHIVE}",)
