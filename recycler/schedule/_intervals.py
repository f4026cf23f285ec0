"""Integer arithmetic behind schedules: periodic grids, interval unions, exact counts.

A :class:`Grid` is a periodic block on integer positions (epochs or steps), scaled so every
quantity is an integer: position ``p`` is on when ``(p*scale - origin) % every < length``.
Counting the on positions of a range is O(log) (a floor sum), never a loop over positions.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from math import lcm

Span = tuple[int, int]


def floor_sum(n: int, m: int, a: int, b: int) -> int:
    """``sum(floor((a*i + b) / m) for i in range(n))`` in O(log m), for n >= 0 and m >= 1."""
    ans = 0
    if a < 0:
        ans += n * (n - 1) // 2 * (a // m)
        a %= m
    if b < 0:
        ans += n * (b // m)
        b %= m
    while True:  # a, b >= 0: the AtCoder Library's unsigned floor sum
        if a >= m:
            ans += n * (n - 1) // 2 * (a // m)
            a %= m
        if b >= m:
            ans += n * (b // m)
            b %= m
        y_max = a * n + b
        if y_max < m:
            return ans
        n, b = divmod(y_max, m)
        m, a = a, m


@dataclass(frozen=True)
class Grid:
    """Position ``p`` is on when ``(p*scale - origin) % every < length`` (all integers)."""

    scale: int
    every: int
    length: int
    origin: int

    @classmethod
    def of(cls, every: Fraction, length: Fraction, origin: Fraction) -> Grid:
        """The grid of a block ``length`` long every ``every``, counted from ``origin``."""
        d = lcm(every.denominator, length.denominator, origin.denominator)
        return cls(d, int(every * d), int(length * d), int(origin * d))

    def on(self, p: int) -> bool:
        return (p * self.scale - self.origin) % self.every < self.length

    def count(self, lo: int, hi: int) -> int:
        """How many positions in [lo, hi) (lo >= 0) are on."""
        if hi <= lo:
            return 0
        if self.length >= self.every:
            return hi - lo
        return self._below(hi) - self._below(lo)

    def _below(self, n: int) -> int:
        # [x mod e < l] = floor(x/e) - floor((x-l)/e) for 0 <= l <= e, x = p*scale - origin
        s, e, o = self.scale, self.every, self.origin
        return floor_sum(n, e, s, -o) - floor_sum(n, e, s, -o - self.length)

    def blocks(self, lo: int, hi: int) -> Iterator[Span]:
        """The on positions in [lo, hi), as half-open ranges, one per block."""
        s, e, o, length = self.scale, self.every, self.origin, self.length
        first = (lo * s - o - length) // e + 1
        last = -((o - hi * s) // e)  # ceil((hi*s - o) / e)
        for k in range(first, last):
            begin = o + k * e
            yield max(-(-begin // s), lo), min(-(-(begin + length) // s), hi)


def union(spans: Iterable[Span], lo: int, hi: int) -> list[Span]:
    """The union of ``spans`` clipped to [lo, hi), as sorted disjoint non-empty ranges."""
    merged: list[Span] = []
    for a, b in sorted(spans):
        a, b = max(a, lo), min(b, hi)
        if b <= a:
            continue
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        else:
            merged.append((a, b))
    return merged


def gaps(spans: list[Span], lo: int, hi: int) -> Iterator[Span]:
    """The parts of [lo, hi) not covered by the sorted disjoint ``spans``."""
    at = lo
    for a, b in spans:
        if a > at:
            yield at, min(a, hi)
        at = max(at, b)
        if at >= hi:
            return
    if at < hi:
        yield at, hi
