"""Schedules: the papers' schedules as strings and dicts, mixed units, unions, exact counts."""

from __future__ import annotations

import doctest
import random
import re
from typing import Any

import pytest

import recycler.schedule
from recycler.errors import ConfigError
from recycler.schedule import ALWAYS, NEVER, AnyOf, Clock, Periodic, Schedule, Window
from recycler.time import Time

SPE = 5  # steps per epoch in the step-level checks


def epochs_on(schedule: Schedule, planned_epochs: int, **clock: Any) -> set[int]:
    """Epochs the schedule distils, asking once per epoch (clock without steps per epoch)."""
    return {
        e
        for e in range(planned_epochs)
        if schedule.active(Clock(epoch=e, planned_epochs=planned_epochs, **clock))
    }


def steps_on(schedule: Schedule, planned_epochs: int, spe: int = SPE, **clock: Any) -> set[int]:
    """Steps the schedule distils, asking once per step (epochs of ``spe`` steps)."""
    return {
        s
        for s in range(planned_epochs * spe)
        if schedule.active(
            Clock(
                step=s, epoch=s // spe, steps_per_epoch=spe, planned_epochs=planned_epochs, **clock
            )
        )
    }


def steps_of(epochs: set[int], spe: int = SPE) -> set[int]:
    return {e * spe + i for e in epochs for i in range(spe)}


# The papers' schedules. Liu et al. 2022 (Table 7) distil 20 of 200 epochs; blocks of a periodic
# schedule start where training starts (the first epoch of each block). Blakeney et al. 2022
# (section 5.2) distil the first 30% of training. Each row: name, string, dict form, planned
# epochs, the distilled epochs.
PAPERS: list[tuple[str, str, Any, int, set[int]]] = [
    ("every step", "always", "always", 200, set(range(200))),
    ("first 20 of 200", "until 20ep", {"until": "20ep"}, 200, set(range(20))),
    (
        "middle 20 of 200",
        "from 90ep until 110ep",
        {"from": "90ep", "until": "110ep"},
        200,
        set(range(90, 110)),
    ),
    ("last 20 of 200", "from 180ep", {"from": "180ep"}, 200, set(range(180, 200))),
    ("last 20 of 200, relative", "from 0.9dur", {"from": "0.9dur"}, 200, set(range(180, 200))),
    (
        "first and last 10 of 200",
        "until 10ep, from 190ep",
        [{"until": "10ep"}, {"from": "190ep"}],
        200,
        set(range(10)) | set(range(190, 200)),
    ),
    (
        "first and last 10 of 200, relative",
        "until 0.05dur, from 0.95dur",
        [{"until": "0.05dur"}, {"from": "0.95dur"}],
        200,
        set(range(10)) | set(range(190, 200)),
    ),
    (
        "1 epoch of every 10, of 200",
        "every 10ep for 1ep",
        {"every": "10ep", "for": "1ep"},
        200,
        set(range(0, 200, 10)),
    ),
    (
        "2 epochs of every 20, of 200",
        "every 20ep for 2ep",
        {"every": "20ep", "for": "2ep"},
        200,
        {e for b in range(0, 200, 20) for e in (b, b + 1)},
    ),
    ("first 30% of 200", "until 0.3dur", {"until": "0.3dur"}, 200, set(range(60))),
    # the same shapes for a 60-epoch run
    ("every step, 60", "always", ["always"], 60, set(range(60))),
    ("first 20 of 60", "until 20ep", {"until": "20ep"}, 60, set(range(20))),
    (
        "middle 20 of 60",
        "from 20ep until 40ep",
        {"from": "20ep", "until": "40ep"},
        60,
        set(range(20, 40)),
    ),
    ("last 20 of 60", "from 40ep", {"from": "40ep"}, 60, set(range(40, 60))),
    (
        "first and last 10 of 60",
        "until 10ep, from 50ep",
        ["until 10ep", {"from": "50ep"}],
        60,
        set(range(10)) | set(range(50, 60)),
    ),
    (
        "1 of every 10 of 60",
        "every 10ep for 1ep",
        {"every": "10ep", "for": "1ep"},
        60,
        {0, 10, 20, 30, 40, 50},
    ),
    (
        "2 of every 20 of 60",
        "every 20ep for 2ep",
        {"for": "2ep", "every": "20ep"},
        60,
        {0, 1, 20, 21, 40, 41},
    ),
    ("first 30% of 60", "until 0.3dur", {"until": "0.3dur"}, 60, set(range(18))),
    ("never", "never", "never", 60, set()),
]
PAPER_IDS = [row[0] for row in PAPERS]


@pytest.mark.parametrize(("name", "text", "spec", "planned", "expected"), PAPERS, ids=PAPER_IDS)
def test_paper_schedules_by_epoch(
    name: str, text: str, spec: Any, planned: int, expected: set[int]
) -> None:
    from_text, from_spec = Schedule.parse(text), Schedule.parse(spec)
    assert from_text == from_spec
    assert Schedule.parse(str(from_text)) == from_text
    assert str(from_text) == text
    assert epochs_on(from_text, planned) == expected
    assert from_text.active_steps(planned_epochs=planned) == len(expected)
    assert from_text.fraction(planned_epochs=planned) == len(expected) / planned


@pytest.mark.parametrize(("name", "text", "spec", "planned", "expected"), PAPERS, ids=PAPER_IDS)
def test_paper_schedules_by_step(
    name: str, text: str, spec: Any, planned: int, expected: set[int]
) -> None:
    schedule = Schedule.parse(spec)
    assert steps_on(schedule, planned) == steps_of(expected)
    plan = {"planned_epochs": planned, "steps_per_epoch": SPE}
    assert schedule.active_steps(**plan) == len(expected) * SPE
    assert schedule.fraction(**plan) == len(expected) / planned
    by_steps = {"planned_steps": planned * SPE, "steps_per_epoch": SPE}
    assert schedule.active_steps(**by_steps) == len(expected) * SPE


def test_liu_schedules_all_distil_20_of_200_epochs() -> None:
    twenty = [row for row in PAPERS if row[3] == 200 and len(row[4]) == 20]
    assert {row[1] for row in twenty} == {
        "until 20ep",
        "from 90ep until 110ep",
        "from 180ep",
        "from 0.9dur",
        "until 10ep, from 190ep",
        "until 0.05dur, from 0.95dur",
        "every 10ep for 1ep",
        "every 20ep for 2ep",
    }
    for row in twenty:
        assert Schedule.parse(row[1]).fraction(planned_epochs=200) == 0.1


@pytest.mark.parametrize(
    ("planned_steps", "expected"),
    [(1000, set(range(300))), (7, {0, 1, 2}), (10, {0, 1, 2}), (1, {0}), (3, {0})],
)
def test_first_30_percent_by_steps(planned_steps: int, expected: set[int]) -> None:
    """Blakeney et al.: KD for the first 30% of training, then off; a step is on if it starts
    before 0.3 x planned steps (exact arithmetic: 0.3 x 10 is 3, so step 3 is off)."""
    s = Schedule.parse("until 0.3dur")
    on = {i for i in range(planned_steps) if s.active(Clock(step=i, planned_steps=planned_steps))}
    assert on == expected
    assert s.active_steps(planned_steps=planned_steps) == len(expected)


# ---------------------------------------------------------------------------- periodic blocks


@pytest.mark.parametrize(
    ("text", "planned", "expected"),
    [
        ("every 20ep for 2ep from 10ep", 60, {10, 11, 30, 31, 50, 51}),
        ("every 10ep for 1ep from 9ep", 40, {9, 19, 29, 39}),  # the last epoch of each ten
        ("every 10ep for 1ep from 5ep until 40ep", 60, {5, 15, 25, 35}),
        ("until 40ep every 10ep for 3ep", 60, {0, 1, 2, 10, 11, 12, 20, 21, 22, 30, 31, 32}),
        ("every 7ep for 7ep", 10, set(range(10))),
        ("every 0.5dur for 0.1dur", 20, {0, 1, 10, 11}),
        ("every 0.1dur for 0.05dur from 0.5dur", 20, {10, 12, 14, 16, 18}),
    ],
)
def test_periodic_by_epoch(text: str, planned: int, expected: set[int]) -> None:
    s = Schedule.parse(text)
    assert epochs_on(s, planned) == expected
    assert s.active_steps(planned_epochs=planned) == len(expected)
    assert steps_on(s, planned) == steps_of(expected)
    assert s.active_steps(planned_epochs=planned, steps_per_epoch=SPE) == SPE * len(expected)


def test_clause_order_is_free_and_str_is_canonical() -> None:
    a = Schedule.parse("until 100ep from 10ep for 2ep every 20ep")
    assert str(a) == "every 20ep for 2ep from 10ep until 100ep"
    assert a == Schedule.parse({"until": "100ep", "every": "20ep", "from": "10ep", "for": "2ep"})
    t = Time.parse
    assert a == Periodic(t("20ep"), t("2ep"), t("10ep"), t("100ep"))


# ---------------------------------------------------------------------------- mixed units


def test_mixed_units_by_step() -> None:
    spe, planned = 10, 6
    cases: dict[str, set[int]] = {
        "every 2ep for 5ba": {s for s in range(60) if s % 20 < 5},
        "from 15ba until 3ep": set(range(15, 30)),
        "every 25ba for 1ep": {s for s in range(60) if s % 25 < 10},
        "every 0.5dur for 1ep": set(range(10)) | set(range(30, 40)),
        "every 1ep for 0.05dur": {s for s in range(60) if s % 10 < 3},
        "every 10ba for 2ba from 1ep until 0.75dur": {10, 11, 20, 21, 30, 31, 40, 41},
        "until 0.25dur": set(range(15)),
    }
    for text, expected in cases.items():
        s = Schedule.parse(text)
        on = steps_on(s, planned, spe=spe)
        assert on == expected, text
        assert s.active_steps(planned_epochs=planned, steps_per_epoch=spe) == len(expected), text


def test_trials_gate_windows() -> None:
    early = Schedule.parse("until 3tr")  # KD only while the registry has fewer than 3 trials
    late = Schedule.parse("from 3tr until 20ep")
    for finished, on_early in [(0, True), (2, True), (3, False), (10, False)]:
        clock = Clock(epoch=5, finished_trials=finished)
        assert early.active(clock) is on_early
        assert late.active(clock) is (not on_early)
        assert late.active(Clock(epoch=20, finished_trials=finished)) is False
        assert early.active_steps(planned_epochs=10, finished_trials=finished) == 10 * on_early
    # a tr bound does not move the blocks of a periodic schedule
    s = Schedule.parse("every 20ep for 2ep from 2tr")
    assert epochs_on(s, 60, finished_trials=2) == {0, 1, 20, 21, 40, 41}
    assert epochs_on(s, 60, finished_trials=1) == set()


def test_dur_resolution_prefers_steps() -> None:
    s = Schedule.parse("until 0.25dur")  # 2.5 of 10 epochs
    assert epochs_on(s, 10) == {0, 1, 2}  # epoch-level: epoch 2 starts before 2.5
    assert steps_on(s, 10, spe=2) == {0, 1, 2, 3, 4}  # step-level: steps before 5
    assert s.active_steps(planned_epochs=10) == 3
    assert s.active_steps(planned_epochs=10, steps_per_epoch=2) == 5


# ---------------------------------------------------------------------------- unions


def test_union_forms_are_equal() -> None:
    expected = AnyOf((Window(end=Time.parse("10ep")), Window(start=Time.parse("50ep"))))
    forms: list[Any] = [
        "until 10ep, from 50ep",
        ["until 10ep", "from 50ep"],
        [{"until": "10ep"}, {"from": "50ep"}],
        ("until 10ep", {"from": "50ep"}),
        [Schedule.parse("until 10ep"), "from 50ep"],
        [["until 10ep"], ["from 50ep"]],
    ]
    for form in forms:
        assert Schedule.parse(form) == expected
    assert Schedule.parse("until 10ep") | Schedule.parse("from 50ep") == expected
    assert Schedule.parse(["until 10ep"]) == Window(end=Time.parse("10ep"))


def test_overlapping_union_counts_each_step_once() -> None:
    s = Schedule.parse("every 10ep for 2ep, until 15ep, every 5ep for 1ep, from 55ep")
    blocks = {15, 20, 21, 25, 30, 31, 35, 40, 41, 45, 50, 51}
    expected = set(range(15)) | blocks | set(range(55, 60))
    assert epochs_on(s, 60) == expected
    assert s.active_steps(planned_epochs=60) == len(expected)
    assert steps_on(s, 60) == steps_of(expected)
    assert s.active_steps(planned_epochs=60, steps_per_epoch=SPE) == SPE * len(expected)
    assert Schedule.parse("always, until 3ep").fraction(planned_epochs=7) == 1.0
    assert Schedule.parse("never, until 3ep").active_steps(planned_epochs=7) == 3


def test_counts_are_arithmetic_not_a_loop_over_steps() -> None:
    assert Schedule.parse("every 2ba for 1ba").active_steps(planned_steps=10**12) == 5 * 10**11
    # several periodic parts: one common period (lcm 6) is merged, then multiplied
    both = Schedule.parse("every 2ba for 1ba, every 3ba for 1ba")
    n = 10**9
    assert both.active_steps(planned_steps=n) == n // 2 + (n + 2) // 3 - (n + 5) // 6
    s = Schedule.parse("every 20ep for 2ep from 10ep until 0.9dur")
    epochs = 10**9
    assert s.active_steps(planned_epochs=epochs) == 2 * ((epochs * 9 // 10 - 10 + 19) // 20)


def test_counts_equal_a_step_by_step_count() -> None:
    """Random schedules and plans: active_steps equals the count of active() over every step."""
    rng = random.Random(1234)
    units = ["ep", "ba", "dur", "tr"]

    def time() -> str:
        unit = rng.choice(units)
        if unit == "dur":
            return f"{rng.choice([0.0, 0.05, 0.1, 0.25, 0.3, 0.5, 0.7, 1.0])}dur"
        return f"{rng.randint(0, 5 if unit == 'tr' else 30)}{unit}"

    def part() -> str:
        keys = rng.sample(["from", "until"], rng.randint(0, 2))
        if rng.random() < 0.5:
            keys += ["every", "for"]
        return " ".join(f"{k} {time()}" for k in keys) or rng.choice(["always", "never"])

    checked = 0
    while checked < 400:
        text = ", ".join(part() for _ in range(rng.randint(1, 3)))
        try:
            s = Schedule.parse(text)
        except ConfigError:
            continue  # e.g. an empty window or a block longer than its period
        spe, epochs = rng.choice([1, 3, 4]), rng.randint(1, 25)
        steps = epochs * spe + rng.randint(0, spe - 1)  # the last epoch may be short
        finished = rng.randint(0, 5)
        plan = {"planned_steps": steps, "steps_per_epoch": spe, "finished_trials": finished}
        try:
            counted = s.active_steps(**plan)
        except ConfigError:
            continue
        clocks = (Clock(step=i, epoch=i // spe, **plan) for i in range(steps))
        assert counted == sum(s.active(c) for c in clocks), (text, plan)
        assert s.fraction(**plan) == counted / steps
        assert Schedule.parse(str(s)) == s
        checked += 1


# ---------------------------------------------------------------------------- errors


def test_missing_plan_information_is_explained() -> None:
    with pytest.raises(ConfigError, match=re.escape("pass planned_epochs (or planned_steps)")):
        Schedule.parse("until 0.3dur").active(Clock(step=3))
    with pytest.raises(ConfigError, match="between epochs and steps: pass steps_per_epoch"):
        Schedule.parse("every 10ep for 5ba").active(Clock(step=3, epoch=0))
    with pytest.raises(ConfigError, match=re.escape("pass planned_epochs (and steps_per_epoch)")):
        Schedule.parse("until 20ep").fraction()
    with pytest.raises(ConfigError, match=re.escape("counts batches (ba): pass steps_per_epoch")):
        Schedule.parse("every 10ba for 1ba").fraction(planned_epochs=10)
    with pytest.raises(ConfigError, match="counts epochs: pass steps_per_epoch"):
        Schedule.parse("every 10ep for 1ep").fraction(planned_steps=100)
    with pytest.raises(ConfigError, match=r"Clock\.planned_epochs must be None or an integer >= 1"):
        Schedule.parse("until 20ep").fraction(planned_epochs=0)


MALFORMED: list[tuple[Any, str]] = [
    ("every 10ep", "'every 10ep': every and for go together, e.g. 'every 20ep for 2ep'"),
    ("for 2ep", "'for 2ep': every and for go together"),
    ("from 10ep until 5ep", "'from 10ep until 5ep': from 10ep is not before until 5ep"),
    ("from 5ep until 5ep", "the window is empty"),
    ("until 20 ep", "in 'until 20 ep': until: write the number and its unit together"),
    ("until 20 epochs", "in 'until 20 epochs': until: invalid time '20': use an integer"),
    ("sometimes", "in 'sometimes': 'sometimes' is not always, never or from, until, every, for"),
    ("Always", "'Always' is not always, never or from, until, every, for"),
    ("until 10ep,", "'until 10ep,': a part between commas is empty"),
    ("", "'': a part between commas is empty"),
    ("until", "in 'until': until needs a time, e.g. 'until 10ep'"),
    ("until 20ep until 30ep", "in 'until 20ep until 30ep': until is given twice"),
    ("until 1.5dur", "until: invalid time '1.5dur': dur is a fraction of the planned length"),
    ("until 10ep, every 1ep for 2ep", "'every 1ep for 2ep': for 2ep is longer than every 1ep"),
    ("every 0ep for 0ep", "every 0ep must be more than zero"),
    ("every 2tr for 1tr", "every 2tr: every/for take ep, ba or dur, not tr"),
    ({"every": "10ep"}, "{'every': '10ep'}: every and for go together"),
    ({"evry": "10ep"}, "{'evry': '10ep'}: unknown key 'evry'; use from, until, every, for"),
    ({"until": 20}, "{'until': 20}: until: invalid time 20: expected a string such as '10ep'"),
    ({}, "{}: give from, until, or every with for"),
    ([], "[]: the list is empty (write never to turn KD off)"),
    (5, "5: expected a string, a dict or a list, not int"),
    (True, "True: expected a string, a dict or a list, not bool"),
    (None, "None: expected a string, a dict or a list, not NoneType"),
    (["until 10ep", 3.5], "3.5: expected a string, a dict or a list, not float"),
]


@pytest.mark.parametrize(("spec", "message"), MALFORMED, ids=[repr(m[0]) for m in MALFORMED])
def test_malformed_schedules(spec: Any, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        Schedule.parse(spec)
    text = str(info.value)
    assert text.startswith("invalid schedule "), text
    assert message in text, text
    assert text.endswith(
        "valid schedules: always, never, 'until 20ep', 'from 40ep until 60ep', "
        "'every 20ep for 2ep', 'every 20ep for 2ep from 10ep', 'until 10ep, from 50ep', "
        "'until 0.3dur', {every: 20ep, for: 2ep}, or a list of these"
    )


def test_constructors_validate_and_coerce() -> None:
    assert Window(start="10ep") == Schedule.parse("from 10ep")  # type: ignore[arg-type]
    assert Periodic("20ep", "2ep") == Schedule.parse("every 20ep for 2ep")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="a window needs from, until or both"):
        Window()
    with pytest.raises(ConfigError, match=r"Periodic\.every: expected a Time, got None"):
        Periodic(None, "2ep")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"Window\.end: expected a Time, got 5"):
        Window(end=5)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="a union's parts must be schedules"):
        AnyOf(("until 5ep",))  # type: ignore[arg-type]


def test_equality_identity_and_hash() -> None:
    s = Schedule.parse("every 20ep for 2ep")
    assert Schedule.parse(s) is s
    assert Schedule.parse("always") == ALWAYS and Schedule.parse("never") == NEVER
    assert ALWAYS != NEVER and s != Schedule.parse("every 20ep for 1ep")
    assert len({s, Schedule.parse("every 20ep for 2ep"), ALWAYS, Schedule.parse("always")}) == 2
    nested = AnyOf((AnyOf((ALWAYS, NEVER)), s))
    assert nested.parts == (ALWAYS, NEVER, s)
    assert str(nested) == "always, never, every 20ep for 2ep"


def test_doctests() -> None:
    assert doctest.testmod(recycler.schedule, raise_on_error=True).attempted > 0
