"""quick_init builds frozen dataclasses exactly as the dataclass's own __init__ does."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

from safehub.schemas.frozen import quick_init
from safehub.schemas.records import Subject
from safehub.services.correlation.core import Cluster


def _pair() -> tuple[type, type]:
    """The same class twice: with the dataclass's own __init__, and with quick_init's."""
    classes = []
    for quick in (False, True):
        @dataclasses.dataclass(frozen=True, slots=True)
        class Point:
            x: int
            y: str
            z: tuple[int, ...] = ()
            note: str | None = dataclasses.field(default=None, compare=False)

        classes.append(quick_init(Point) if quick else Point)
    return classes[0], classes[1]


def test_positional_keyword_and_default_arguments_give_the_same_values() -> None:
    plain, quick = _pair()
    for args, kwargs in [((1, "a"), {}), ((1,), {"y": "b", "z": (2,)}),
                         ((), {"x": 3, "y": "c", "note": "n"}), ((4, "d", (5,), "m"), {})]:
        a, b = plain(*args, **kwargs), quick(*args, **kwargs)
        assert [getattr(a, f) for f in ("x", "y", "z", "note")] == \
            [getattr(b, f) for f in ("x", "y", "z", "note")]
    def params(cls: type) -> list[tuple[str, object, object]]:
        return [(p.name, p.kind, p.default)
                for p in inspect.signature(cls).parameters.values()]

    assert params(quick) == params(plain)


def test_it_stays_frozen_comparable_and_hashable() -> None:
    _, quick = _pair()
    p = quick(1, "a")
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.x = 2
    with pytest.raises(dataclasses.FrozenInstanceError):
        del p.y
    assert p == quick(1, "a", (), "other note")  # `note` is not compared
    assert hash(p) == hash(quick(1, "a"))
    assert dataclasses.replace(p, x=5).x == 5
    assert p != quick(1, "b")


def test_bad_calls_fail_as_they_would_without_it() -> None:
    _, quick = _pair()
    with pytest.raises(TypeError):
        quick(1)  # y is missing
    with pytest.raises(TypeError):
        quick(1, "a", w=2)
    with pytest.raises(TypeError):
        quick(1, "a", (), None, "extra")


def test_classes_it_cannot_build_exactly_are_refused() -> None:
    @dataclasses.dataclass(slots=True)
    class Mutable:
        x: int

    @dataclasses.dataclass(frozen=True)
    class NoSlots:
        x: int

    @dataclasses.dataclass(frozen=True, slots=True)
    class Factory:
        x: list[int] = dataclasses.field(default_factory=list)

    @dataclasses.dataclass(frozen=True, slots=True)
    class KeywordOnly:
        x: int = dataclasses.field(kw_only=True)

    @dataclasses.dataclass(frozen=True, slots=True)
    class Checked:
        x: int

        def __post_init__(self) -> None:
            pass

    for cls in (Mutable, NoSlots, Factory, KeywordOnly, Checked):
        with pytest.raises(TypeError):
            quick_init(cls)


def test_the_records_and_core_values_use_it() -> None:
    s = Subject(match_keys=None, key_epoch=1, linkage_block=2, age_years=14,  # type: ignore[arg-type]
                local_authority="E08000035", placing_authority=None, reid_handle="0" * 32)
    assert (s.key_epoch, s.linkage_block, s.reid_handle) == (1, 2, "0" * 32)
    assert "set_reid_handle" in Subject.__init__.__globals__  # quick_init's, not dataclass's
    c = Cluster(frozenset(), ())
    assert "set_peak" in Cluster.__init__.__globals__
    assert (c.conflict, c.alerted_rank, c.peak, c.peak_known) == (False, 0, None, False)
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.conflict = True  # type: ignore[misc]
