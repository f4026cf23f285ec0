"""Whole recycled trials against their plain twins: what a trial costs, not only a step.

A trial here is everything a sweep pays for: building the Distiller, its first pool query
and teacher loading, every step (cache misses of the first epoch included), the pool
refreshes on the configured schedule, and the end of the trial (registering the model,
writing lineage). Modes run as complete trials, interleaved (each repetition runs every mode
once, in an order that rotates), and each mode's ratio to its base is taken repetition by
repetition; the median over repetitions is reported.

Modes:
  plain       the student alone
  floor       plain + one teacher's forward every step, by hand (sample-1's least cost)
  online      Distiller, sample-1 from a pool of 5, teachers run every step
  cached      Distiller with the teacher-logit cache (exact here: fixed inputs per sample id)
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from recycler.config import RecycleConfig
from recycler.demo.task import ConvNet1D
from recycler.distiller import Distiller
from storage import Registry

WHOLE_MODES = ("plain", "floor", "online", "cached")
WHOLE_TARGETS = {
    "cached": ("plain", 1.08, "cached whole trial <= 1.08x plain"),
    "online": ("floor", 1.08, "online whole trial <= 1.08x its floor"),
}


@dataclass
class WholeTrials:
    """Each mode's whole-trial seconds, repetition by repetition."""

    seconds: dict[str, list[float]]

    def ratio(self, name: str, base: str) -> float:
        """Median over repetitions of the mode's trial time over its base's."""
        pairs = zip(self.seconds[name], self.seconds[base], strict=True)
        return statistics.median(a / b for a, b in pairs)


class TrialBench:
    """A registry of 5 teachers and one function per mode that runs a whole trial."""

    def __init__(
        self, root: Path, registry: Registry, *, batch: int, epochs: int, steps_per_epoch: int
    ) -> None:
        self.root = root
        self.registry = registry
        self.epochs = epochs
        self.steps_per_epoch = steps_per_epoch
        torch.manual_seed(0)
        self.teacher = ConvNet1D(32).eval().requires_grad_(False)
        g = torch.Generator().manual_seed(1)
        inputs = [torch.randn(batch, 1, 40, generator=g) for _ in range(steps_per_epoch)]
        # the labels are the registered teachers' answers (see kd_overhead.Bench): none is
        # ever outgrown, so a recycled trial distils every step
        self.data = [(x, self.teacher(x).argmax(-1)) for x in inputs]
        self.ids = [torch.arange(i * batch, (i + 1) * batch) for i in range(steps_per_epoch)]
        self.trials = 0

    def run(self, mode: str) -> float:
        """Seconds of one whole trial of ``mode``."""
        runners: dict[str, Callable[[], None]] = {
            "plain": lambda: self._manual(teacher=False),
            "floor": lambda: self._manual(teacher=True),
            "online": lambda: self._recycled(cache=False),
            "cached": lambda: self._recycled(cache=True),
        }
        start = time.perf_counter()
        runners[mode]()
        return time.perf_counter() - start

    def _student(self) -> tuple[ConvNet1D, torch.optim.Optimizer]:
        torch.manual_seed(99)
        net = ConvNet1D(32)
        return net, torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)

    def _manual(self, *, teacher: bool) -> None:
        net, opt = self._student()
        for _ in range(self.epochs):
            for x, y in self.data:
                loss = F.cross_entropy(net(x), y)
                if teacher:
                    with torch.inference_mode():
                        self.teacher(x)
                _update(opt, loss)

    def _recycled(self, *, cache: bool) -> None:
        net, opt = self._student()
        self.trials += 1
        cfg = RecycleConfig.from_dict(
            {
                "registry": self.registry.url,
                "blobs": str(self.root / "blobs"),
                "study": "whole-students",
                "teachers": {"studies": ["bench"], "pool": 5, "per_step": 1},
                "distill": {"cache": cache},
            }
        )
        kd = Distiller(
            cfg, study="whole-students", trial_number=self.trials, registry=self.registry
        )
        kd.attach(net).plan(epochs=self.epochs, steps_per_epoch=self.steps_per_epoch)
        for _ in range(kd.epochs or self.epochs):
            for i, (x, y) in enumerate(self.data):
                _update(opt, kd.loss(net(x), y, x, sample_ids=self.ids[i]))
        if kd.stats()["steps_distilled"] != kd.step:  # e.g. a teacher retired: not a KD trial
            raise RuntimeError(f"a whole trial distilled {kd.stats()['steps_distilled']} steps "
                               f"of {kd.step}: its time is not a KD trial's")  # fmt: skip
        kd.finish("complete", 0.0)  # registered, never in a pool (the bench teachers are better)


def measure_whole(bench: TrialBench, *, repetitions: int) -> WholeTrials:
    """Every mode as complete trials, interleaved, ``repetitions`` times."""
    out = WholeTrials({name: [] for name in WHOLE_MODES})
    for mode in WHOLE_MODES:  # warm-up: one short trial of each (imports, allocator)
        bench.run(mode)
    names = list(WHOLE_MODES)
    for r in range(repetitions):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            out.seconds[name].append(bench.run(name))
        print(f"whole trials: repetition {r + 1}/{repetitions} done", flush=True)
    return out


def report_whole(result: WholeTrials, *, epochs: int, steps_per_epoch: int) -> None:
    """The whole-trial table and its targets."""
    print(f"\nWhole trials ({epochs} epochs x {steps_per_epoch} steps, pool of 5, sample-1)")
    print(f"{'mode':<16} {'trial s':>9} {'x plain':>8} {'x floor':>8}")
    for name in WHOLE_MODES:
        seconds = statistics.median(result.seconds[name])
        print(
            f"{name:<16} {seconds:>9.3f} {result.ratio(name, 'plain'):>8.3f} "
            f"{result.ratio(name, 'floor'):>8.3f}"
        )
    print("\nwhole-trial targets")
    for name, (base, limit, text) in WHOLE_TARGETS.items():
        ratio = result.ratio(name, base)
        verdict = "met" if ratio <= limit else "MISSED"
        print(f"  {text:<36} {name}/{base} = {ratio:.3f} (<= {limit}): {verdict}")


def _update(opt: torch.optim.Optimizer, loss: torch.Tensor) -> None:
    opt.zero_grad(set_to_none=True)
    loss.backward()  # type: ignore[no-untyped-call]
    opt.step()
