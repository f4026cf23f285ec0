"""Item 9: YAML alias bombs, numbers too large for their field and duplicate keys are
ConfigErrors with the key path, found in milliseconds; error messages stay short."""

from __future__ import annotations

import time

import pytest

from recycler.config import RecycleConfig
from recycler.errors import ConfigError

BOMB = "\n".join(
    [
        'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]',
        *(
            f"{chr(98 + i)}: &{chr(98 + i)} [" + ",".join([f"*{chr(97 + i)}"] * 9) + "]"
            for i in range(8)
        ),
        "distill: {weight: *i}",
    ]
)


def _refused(source: str, match: str) -> str:
    start = time.perf_counter()
    with pytest.raises(ConfigError, match=match) as info:
        RecycleConfig.from_yaml(source)
    assert time.perf_counter() - start < 2.0
    message = str(info.value)
    assert len(message) < 1000, len(message)
    return message


def test_an_alias_bomb_is_refused_at_once() -> None:
    assert len(BOMB) < 600  # a few hundred bytes that expand to 9**9 values
    _refused(BOMB, "through YAML aliases")


def test_a_few_aliases_still_work() -> None:
    cfg = RecycleConfig.from_yaml("study: &s lr\nteachers: {studies: [*s, *s]}\n")
    assert (cfg.study, cfg.teachers.studies) == ("lr", ("lr",))


def test_a_recursive_alias_is_refused() -> None:
    _refused("teachers: &t {studies: [*t]}\n", "refers to itself")


def test_a_duplicate_key_names_its_path() -> None:
    message = _refused("teachers:\n  pool: 3\n  policy: best\n  pool: 4\n", "teachers.pool")
    assert "duplicate key (lines 2 and 4)" in message


@pytest.mark.parametrize(
    ("source", "path"),
    [
        ("teachers: {pool: 99999999999999999999999}", "teachers.pool"),
        ("distill: {cache_max_bytes: " + "9" * 400 + "}", "distill.cache_max_bytes"),
        ("distill: {weight: 1" + "0" * 400 + "}", "distill.weight"),
        ("teachers: {refresh: " + "9" * 30 + "ba}", "teachers.refresh"),
        ("teachers: {seed: 18446744073709551616}", "teachers.seed"),
    ],
)
def test_numbers_too_large_for_their_field(source: str, path: str) -> None:
    _refused(source, path)


def test_an_oversized_config_is_refused() -> None:
    _refused("study: x\n" + "#" * (2 << 20), "characters of YAML")
