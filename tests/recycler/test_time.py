"""Time strings (10ep, 500ba, 4tr, 0.3dur) and the Clock that resolves them."""

from __future__ import annotations

import doctest
import pickle
import re
from fractions import Fraction

import pytest

import recycler.time
from recycler.errors import ConfigError
from recycler.time import Clock, Time, TimeUnit

UNITS_HELP = (
    "use an integer with ep, ba or tr (e.g. 10ep, 500ba, 4tr) or a fraction with dur (e.g. 0.3dur)"
)

VALID = [
    # text, value, unit, str()
    ("10ep", 10, TimeUnit.EPOCH, "10ep"),
    ("0ep", 0, TimeUnit.EPOCH, "0ep"),
    ("500ba", 500, TimeUnit.BATCH, "500ba"),
    ("4tr", 4, TimeUnit.TRIAL, "4tr"),
    ("0.3dur", 0.3, TimeUnit.DURATION, "0.3dur"),
    ("1dur", 1.0, TimeUnit.DURATION, "1.0dur"),
    ("1.0dur", 1.0, TimeUnit.DURATION, "1.0dur"),
    (".5dur", 0.5, TimeUnit.DURATION, "0.5dur"),
    ("0dur", 0.0, TimeUnit.DURATION, "0.0dur"),
    ("0.00001dur", 1e-05, TimeUnit.DURATION, "0.00001dur"),
    ("  20ep ", 20, TimeUnit.EPOCH, "20ep"),
    ("007ba", 7, TimeUnit.BATCH, "7ba"),
]


@pytest.mark.parametrize(("text", "value", "unit", "shown"), VALID)
def test_parse_valid(text: str, value: float, unit: TimeUnit, shown: str) -> None:
    t = Time.parse(text)
    assert (t.value, t.unit, str(t)) == (value, unit, shown)
    assert type(t.value) is (float if unit is TimeUnit.DURATION else int)
    assert Time.parse(str(t)) == t


INVALID = [
    # text, what the message says besides the units help
    ("10 epochs", ""),
    ("10epochs", "unknown unit 'epochs'; "),
    ("10", ""),
    ("ep", ""),
    ("", ""),
    ("10EP", ""),
    ("10.5ep", "ep needs a whole number; "),
    ("10.0ba", "ba needs a whole number; "),
    ("1.5tr", "tr needs a whole number; "),
    ("-5ep", "must not be negative; "),
    ("-0.1dur", "must not be negative; "),
    ("1.5dur", "dur is a fraction of the planned length, at most 1; "),
    ("nandur", ""),
    ("infdur", ""),
    ("1e-5dur", ""),
    ("3 dur", ""),
]


@pytest.mark.parametrize(("text", "why"), INVALID)
def test_parse_invalid(text: str, why: str) -> None:
    with pytest.raises(ConfigError) as info:
        Time.parse(text)
    assert str(info.value) == f"invalid time {text!r}: {why}{UNITS_HELP}"


@pytest.mark.parametrize("value", [10, 0.3, True, None, ["10ep"]])
def test_parse_is_strict_about_types(value: object) -> None:
    with pytest.raises(ConfigError, match=r"expected a string such as '10ep'"):
        Time.parse(value)  # type: ignore[arg-type]


def test_parse_returns_a_time_unchanged() -> None:
    t = Time(3, TimeUnit.EPOCH)
    assert Time.parse(t) is t


@pytest.mark.parametrize(
    ("value", "unit", "message"),
    [
        (True, "ep", "invalid time True ep: the value must be a number"),
        ("10", "ep", "invalid time '10' ep: the value must be a number"),
        (1.5, "ep", "invalid time 1.5 ep: ep needs a whole number"),
        (10.0, "ba", "invalid time 10.0 ba: ba needs a whole number"),
        (-1, "ba", "invalid time -1 ba: must not be negative"),
        (float("nan"), "dur", "invalid time nan dur: the value must be finite"),
        (float("inf"), "dur", "invalid time inf dur: the value must be finite"),
        (1.01, "dur", "invalid time 1.01 dur: dur is a fraction of the planned length, at most 1"),
        (2, "epochs", "invalid time unit 'epochs'"),
    ],
)
def test_constructor_validates(value: object, unit: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        Time(value, unit)  # type: ignore[arg-type]
    assert str(info.value).startswith(message)
    assert str(info.value).endswith(UNITS_HELP)


def test_equality_hash_repr_and_pickle() -> None:
    a, b = Time(10, "ep"), Time.parse("10ep")  # type: ignore[arg-type]
    assert a == b and hash(a) == hash(b) and a.unit is TimeUnit.EPOCH
    assert Time(1, "dur") == Time.parse("1dur")  # type: ignore[arg-type]
    assert Time.parse("10ep") != Time.parse("10ba")
    assert repr(Time.parse("0.3dur")) == "Time(0.3, 'dur')"
    assert pickle.loads(pickle.dumps(Time.parse("0.3dur"))) == Time.parse("0.3dur")
    assert {Time.parse("2ep"), Time(2, TimeUnit.EPOCH)} == {Time.parse("2ep")}


def test_exact_value() -> None:
    assert Time.parse("0.3dur").exact == Fraction(3, 10)
    assert Time.parse("0.1dur").exact * 30 == 3  # not 3.0000000000000004
    assert Time.parse("7ba").exact == 7


# ---------------------------------------------------------------------------- Clock


def test_clock_conversions() -> None:
    clock = Clock(step=12, epoch=2, steps_per_epoch=5, planned_epochs=10)
    assert clock.total_steps == 50
    assert [clock.steps(Time.parse(t)) for t in ("3ep", "7ba", "0.3dur", "1dur")] == [15, 7, 15, 50]
    assert [clock.epochs(Time.parse(t)) for t in ("3ep", "7ba", "0.3dur")] == [
        3,
        Fraction(7, 5),
        3,
    ]
    assert Clock(planned_steps=7).steps(Time.parse("0.3dur")) == Fraction(21, 10)
    assert Clock(planned_steps=8, planned_epochs=4).total_steps == 8
    assert Clock(planned_epochs=4).total_steps is None
    assert Clock(planned_steps=100, steps_per_epoch=10).epochs(Time.parse("0.25dur")) == Fraction(
        5, 2
    )


def test_clock_reached() -> None:
    clock = Clock(step=12, epoch=2, steps_per_epoch=5, planned_epochs=10, finished_trials=3)
    reached = {t: clock.reached(Time.parse(t)) for t in ("2ep", "3ep", "12ba", "13ba")}
    assert reached == {"2ep": True, "3ep": False, "12ba": True, "13ba": False}
    assert clock.reached(Time.parse("3tr")) and not clock.reached(Time.parse("4tr"))
    # dur: planned steps when known (12 >= 0.24 * 50), else planned epochs
    assert clock.reached(Time.parse("0.24dur")) and not clock.reached(Time.parse("0.26dur"))
    by_epochs = Clock(epoch=3, planned_epochs=10)
    assert by_epochs.reached(Time.parse("0.3dur")) and not by_epochs.reached(Time.parse("0.31dur"))
    # exact: step 3 of 10 is not before 0.3dur (float 0.3 * 10 would say 3.0000000000000004)
    assert Clock(step=3, planned_steps=10).reached(Time.parse("0.3dur"))


def test_clock_first_step() -> None:
    clock = Clock(steps_per_epoch=5, planned_steps=7, finished_trials=2)
    firsts = [clock.first_step(Time.parse(t)) for t in ("2ep", "3ba", "0.3dur", "2tr", "3tr")]
    assert firsts == [10, 3, 3, 0, None]


def test_clock_says_what_is_missing() -> None:
    with pytest.raises(ConfigError, match=re.escape("pass planned_epochs (or planned_steps)")):
        Clock(step=3).reached(Time.parse("0.3dur"))
    with pytest.raises(ConfigError, match="between epochs and steps: pass steps_per_epoch"):
        Clock(planned_epochs=10).steps(Time.parse("1ep"))
    with pytest.raises(ConfigError, match="between epochs and steps: pass steps_per_epoch"):
        Clock(planned_steps=10).epochs(Time.parse("1ba"))


def test_clock_conversion_errors() -> None:
    with pytest.raises(ConfigError, match="no planned length in steps; pass planned_steps"):
        Clock(planned_epochs=3).steps(Time.parse("0.5dur"))
    with pytest.raises(ConfigError, match="counts finished trials, not steps"):
        Clock().steps(Time.parse("2tr"))
    with pytest.raises(ConfigError, match="counts finished trials, not epochs"):
        Clock().epochs(Time.parse("2tr"))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"step": -1}, "Clock.step must be an integer >= 0, got -1"),
        ({"epoch": 1.5}, "Clock.epoch must be an integer >= 0, got 1.5"),
        ({"finished_trials": True}, "Clock.finished_trials must be an integer >= 0, got True"),
        ({"steps_per_epoch": 0}, "Clock.steps_per_epoch must be None or an integer >= 1, got 0"),
        ({"planned_steps": 2.0}, "Clock.planned_steps must be None or an integer >= 1, got 2.0"),
        ({"planned_epochs": -3}, "Clock.planned_epochs must be None or an integer >= 1, got -3"),
    ],
)
def test_clock_validates(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        Clock(**kwargs)  # type: ignore[arg-type]
    assert str(info.value) == message


def test_doctests() -> None:
    assert doctest.testmod(recycler.time, raise_on_error=True).attempted > 0
