"""What distillation costs per training step, measured side by side in one run.

A small CNN (the demo's 3-layer Conv1d+BatchNorm net on MNIST-1D-shaped batches) is trained
in every mode, interleaved epoch by epoch (10 steps of mode A, 10 of mode B, ..., in an order
that rotates), so the machine's slow swings in speed hit every mode alike: on this shared
2-core machine, two identical modes timed in blocks of 100 steps differed by up to 4%. The
first step of each block is not counted (it starts on the previous mode's caches). The light
modes and the 5-teacher modes are measured in two groups, one after the other, each with its
own plain and floor: the ensembles' large activations slowed whichever mode ran next. Reported:
the median step time of each mode, and its ratio to the plain step (and the floor) of its
group, taken cycle by cycle: a cycle runs one block of every mode in under half a second, the
ratio of two modes' block medians in one cycle is free of the machine's slower swings in speed
(plain ran 4.0 and 5.3 ms a step within minutes here), and the median over cycles is reported.

    python examples/benchmarks/kd_overhead.py            # about 8 minutes on 2 CPU cores
    python examples/benchmarks/kd_overhead.py --quick    # a smoke run

After the step table, whole trials (``_whole_trial.py``): complete 60-epoch trials of each
mode interleaved with their plain twins, first pool query, teacher loading, cache misses,
refreshes and registration included (``--whole-reps 0`` leaves them out).

Modes:
  plain           student forward + cross-entropy + backward + SGD step
  floor           plain + one teacher forward (the least any sample-1 KD step can cost)
  sample-1        Distiller, one teacher sampled per step from a pool of 5
  all-5 loop      plain + the 5-teacher ensemble, one teacher after another, + the KD loss
  all-5 fused     plain + the 5 teachers in one fused call (the wide rewrite) + the KD loss
  all-5 vmap      the same with the vmap-fused call (what accelerators use for any model)
  all-5 Distiller Distiller with per_step: all (the ensemble every step)
  2-of-20 epochs  Distiller on the schedule "every 20ep for 2ep", amortised over 20 epochs:
                  f * median(distilled steps) + (1 - f) * median(other steps), f = 2/20
  cached          Distiller with the teacher-logit cache, after its first (filling) epoch
  KD by hand      plain + the KD term on teacher rows standardised beforehand, no Distiller
                  (the least a cached step can cost)
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from _whole_trial import TrialBench, measure_whole, report_whole

from recycler.config import RecycleConfig
from recycler.demo.task import ConvNet1D
from recycler.distiller import Distiller
from recycler.fused import FusedEnsemble, loop_forward
from recycler.losses import KDTerm, combine, kd_loss
from storage import Registry

Step = Callable[[int], None]
SCHEDULED = "2-of-20 epochs"
#: Measured group by group: the ensemble modes' large activations disturb the CPU caches and the
#: allocator of whatever runs next, which one mode running alone (a real trial) never meets.
GROUPS = (
    ("plain", "floor", "sample-1", SCHEDULED, "cached", "KD by hand"),
    ("plain", "floor", "all-5 loop", "all-5 fused", "all-5 vmap", "all-5 Distiller"),
)
TARGETS = {
    "sample-1": ("floor", 1.05, "sample-1 within 5% of its floor"),
    "2-of-20 epochs": ("plain", 1.10, "scheduled <= 1.1x plain"),
    "all-5 fused": ("all-5 loop", 1.0, "fused all-5 faster than the loop"),
    "cached": ("plain", 1.05, "cached <= 1.05x plain"),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="few steps: a smoke run")
    ap.add_argument("--batch", type=int, default=128, help="batch size (128, as the papers)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1: steadier)")
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--whole-reps", type=int, default=None, help="whole-trial repetitions")
    ap.add_argument("--whole-epochs", type=int, default=None, help="epochs of a whole trial")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rounds = args.rounds or (3 if args.quick else 12)
    steps_per_epoch = 10
    steps = 4 * steps_per_epoch if args.quick else 20 * steps_per_epoch  # one 20-epoch period

    groups: list[Group] = []
    with tempfile.TemporaryDirectory() as tmp:
        bench = Bench(Path(tmp), batch=args.batch, steps_per_epoch=steps_per_epoch)
        for names in GROUPS:  # each group made and measured on its own, light one first
            groups.append(measure(bench, bench.modes(names), rounds=rounds, steps=steps))
        print(
            f"all-5 fused ran as: {bench.fused_kind()} (the wide rewrite, or vmap if it fell back)"
        )
        for kd in bench.made:  # a retired teacher would have made later steps cheap
            if "retired" in kd.stats():
                raise RuntimeError(f"a teacher retired mid-measurement: {kd.stats()['retired']}")
        on = groups[0].on
        print(f"{SCHEDULED}: {sum(on) / len(on):.3f} of the steps distilled")
        report(groups, args)
        reps = args.whole_reps if args.whole_reps is not None else (1 if args.quick else 5)
        epochs = args.whole_epochs or (3 if args.quick else 60)
        if reps > 0:
            trials = TrialBench(
                Path(tmp),
                bench.registry,
                batch=args.batch,
                epochs=epochs,
                steps_per_epoch=steps_per_epoch,
            )
            report_whole(
                measure_whole(trials, repetitions=reps),
                epochs=epochs,
                steps_per_epoch=steps_per_epoch,
            )


Cycle = dict[str, float]  # one rotation: each mode's median step of its block


def measure(bench: Bench, modes: dict[str, Step], *, rounds: int, steps: int) -> Group:
    """Each mode's steps, the modes interleaved epoch by epoch, and every cycle's block medians."""
    spe = bench.steps_per_epoch
    group = Group({name: [] for name in modes}, [], [])
    for step in modes.values():  # warm-up (and the cache's filling epoch)
        for i in range(spe * 2):
            step(i)
    names = list(modes)
    for r in range(rounds):
        for b, first in enumerate(range(0, steps, spe)):
            # one epoch per mode in turn, in an order that rotates epoch by epoch
            k = (r * steps + b) % len(names)
            cycle: Cycle = {}
            for name in names[k:] + names[:k]:
                before = bench.scheduled_steps() if name == SCHEDULED else 0
                block = []
                for i in range(first, first + spe):
                    start = time.perf_counter()
                    modes[name](i)
                    elapsed = time.perf_counter() - start
                    if i > first:  # the first step ran on the previous mode's caches: warm-up
                        block.append(elapsed)
                if name == SCHEDULED:  # a block is one epoch: it distils all through, or not
                    group.on.append(bench.scheduled_steps() > before)
                group.times[name] += block
                cycle[name] = statistics.median(block)
            group.cycles.append(cycle)
        print(f"{', '.join(names)}: round {r + 1}/{rounds} done", flush=True)
    return group


@dataclass
class Group:
    """The timings of a group of modes measured together."""

    times: dict[str, list[float]]  # every counted step of each mode, in seconds
    cycles: list[Cycle]
    on: list[bool]  # per cycle: whether the scheduled mode's block distilled

    def median(self, name: str) -> float:
        """The mode's median step (the scheduled mode: amortised over its period)."""
        if name != SCHEDULED:
            return statistics.median(self.times[name])
        per_block = len(self.times[name]) // len(self.on)
        on = [o for o in self.on for _ in range(per_block)]
        return amortised(self.times[name], on)

    def ratio(self, name: str, base: str) -> float:
        """Median over the cycles of the mode's block median over the base's: the two were
        measured a fraction of a second apart, so the machine's slow swings cancel out."""
        ratios = [c[name] / c[base] for c in self.cycles]
        return amortised(ratios, self.on) if name == SCHEDULED else statistics.median(ratios)


class Bench:
    """The student, five registered teachers and one step function per mode."""

    def __init__(self, root: Path, *, batch: int, steps_per_epoch: int) -> None:
        self.root = root
        self.steps_per_epoch = steps_per_epoch
        self.last: Distiller | None = None  # the Distiller of the mode made last
        self.made: list[Distiller] = []  # every mode's Distiller
        self.scheduled: Distiller | None = None  # the scheduled mode's Distiller
        self.registry = Registry(f"sqlite:///{root / 'r.db'}", root / "blobs")
        torch.manual_seed(0)
        first = ConvNet1D(32).eval().requires_grad_(False)
        g = torch.Generator().manual_seed(0)
        inputs = [torch.randn(batch, 1, 40, generator=g) for _ in range(steps_per_epoch)]
        # labels are the first teacher's answers and the others are it with a rescaled head
        # (the same answers): no teacher is ever outgrown, so every step distils, and the
        # retirement's count (teachers.retire, on by default) is in every measured step
        self.data = [(x, first(x).argmax(-1)) for x in inputs]
        self.ids = [torch.arange(i * batch, (i + 1) * batch) for i in range(steps_per_epoch)]
        self.teachers = []
        for trial in range(5):
            net = copy.deepcopy(first)
            net.head.weight.mul_(1 + trial / 10)
            net.head.bias.mul_(1 + trial / 10)
            self.registry.register(
                net.state_dict(),
                study="bench",
                trial_number=trial,
                metric_name="accuracy",
                metric_value=0.5 + trial / 100,
                output_signature="logits/2d/10",
            )
            self.teachers.append(net.requires_grad_(False))
        self.fused: dict[str, FusedEnsemble] = {}

    def student(self) -> tuple[ConvNet1D, torch.optim.Optimizer]:
        torch.manual_seed(99)
        net = ConvNet1D(32)
        return net, torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)

    def manual(self, teachers: Callable[[torch.Tensor], torch.Tensor] | None) -> Step:
        net, opt = self.student()

        def step(i: int) -> None:
            x, y = self.data[i % self.steps_per_epoch]
            logits = net(x)
            loss = F.cross_entropy(logits, y)
            if teachers is not None:
                with torch.inference_mode():
                    t = teachers(x)
                if t.dim() == 3:  # all-5 fused: [5, B, C] -> mean, then the KD term
                    loss = loss + kd_loss(logits, t.mean(0))
            update(opt, loss)

        return step

    def by_hand(self) -> Step:
        """Plain + the KD term against the first teacher's rows, standardised beforehand."""
        net, opt = self.student()
        term = KDTerm()
        with torch.no_grad():
            rows = [term.target(self.teachers[0](x), x) for x, _ in self.data]

        def step(i: int) -> None:
            x, y = self.data[i % self.steps_per_epoch]
            logits = net(x)
            kd = term(logits, rows[i % self.steps_per_epoch], prepared=True)
            loss = combine(F.cross_entropy(logits, y), kd, 1.0)
            update(opt, loss)

        return step

    def distilled(self, **sections: object) -> Step:
        net, opt = self.student()
        cfg = RecycleConfig.from_dict(
            {"registry": self.registry._url, "blobs": str(self.root / "blobs"), **sections}
        )
        kd = Distiller(cfg, study="bench", trial_number=5, registry=self.registry, model=net)
        kd.plan(epochs=10_000, steps_per_epoch=self.steps_per_epoch)
        self.last = kd
        self.made.append(kd)

        def step(i: int) -> None:
            x, y = self.data[i % self.steps_per_epoch]
            loss = kd.loss(net(x), y, x, sample_ids=self.ids[i % self.steps_per_epoch])
            update(opt, loss)

        return step

    def scheduled_steps(self) -> int:
        """Steps the scheduled mode's Distiller has distilled so far."""
        assert self.scheduled is not None
        return int(self.scheduled.stats()["steps_distilled"])

    def modes(self, names: Sequence[str]) -> dict[str, Step]:
        """The step functions of these modes, made now (a mode's memory only from now on)."""
        one = self.teachers[0]
        makers: dict[str, Callable[[], Step]] = {
            "plain": lambda: self.manual(None),
            "floor": lambda: self.manual(lambda x: one(x)),
            "sample-1": lambda: self.distilled(teachers={"per_step": 1}),
            SCHEDULED: lambda: self.distilled(distill={"schedule": "every 20ep for 2ep"}),
            "cached": lambda: self.distilled(distill={"cache": True}),
            "KD by hand": self.by_hand,
            "all-5 loop": lambda: self.manual(lambda x: loop_forward(self.teachers, x)),
            "all-5 fused": lambda: self.manual(self._fused("auto")),
            "all-5 vmap": lambda: self.manual(self._fused("vmap")),
            "all-5 Distiller": lambda: self.distilled(teachers={"per_step": "all"}),
        }
        modes = {}
        for name in names:
            modes[name] = makers[name]()
            if name == SCHEDULED:
                self.scheduled = self.last
        return modes

    def _fused(self, strategy: str) -> FusedEnsemble:
        self.fused[strategy] = FusedEnsemble(self.teachers, strategy=strategy)
        return self.fused[strategy]

    def fused_kind(self) -> str:
        """How the "all-5 fused" mode ran its teachers."""
        return self.fused["auto"].kind if "auto" in self.fused else "not run"


def update(opt: torch.optim.Optimizer, loss: torch.Tensor) -> None:
    """The step's backward and SGD update, the same in every mode."""
    opt.zero_grad(set_to_none=True)
    loss.backward()  # type: ignore[no-untyped-call]
    opt.step()


def amortised(times: list[float], on: list[bool]) -> float:
    """A schedule's cost per step over its period: the medians of its distilled and other
    steps (or step ratios), weighted by the fraction distilled (robust to noise spikes, unlike
    the mean)."""
    distilled = [t for t, o in zip(times, on, strict=True) if o]
    other = [t for t, o in zip(times, on, strict=True) if not o]
    f = len(distilled) / len(times)
    cost = (f * statistics.median(distilled) if distilled else 0.0) + (
        (1 - f) * statistics.median(other) if other else 0.0
    )
    return cost


def report(groups: list[Group], args: argparse.Namespace) -> None:
    """Median step times, and ratios to plain and floor of the same group, cycle by cycle."""
    print(f"\nKD overhead per training step (batch {args.batch}, {args.threads} thread(s))")
    print(f"{'mode':<16} {'step ms':>9} {'x plain':>8} {'x floor':>8}")
    ratios: dict[str, dict[str, float]] = {}
    for g, group in enumerate(groups):
        for name in group.times:
            ratios[name] = {base: group.ratio(name, base) for base in ("plain", "floor")}
            if g and name in ("plain", "floor"):
                continue  # shown once, from the first group
            print(
                f"{name:<16} {group.median(name) * 1e3:>9.3f} {ratios[name]['plain']:>8.3f} "
                f"{ratios[name]['floor']:>8.3f}"
            )
        if "all-5 loop" in group.times:
            ratios["all-5 fused"]["all-5 loop"] = group.ratio("all-5 fused", "all-5 loop")
    print("\ntargets")
    for name, (base, limit, text) in TARGETS.items():
        ratio = ratios[name][base]
        verdict = "met" if ratio <= limit else "MISSED"
        print(f"  {text:<36} {name}/{base} = {ratio:.3f} (<= {limit}): {verdict}")


if __name__ == "__main__":
    main()
