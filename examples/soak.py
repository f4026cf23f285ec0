"""A bounded soak of the registry: worker processes training small recycled trials on
registries that share one blob store, while ``teachers gc`` and ``teachers verify`` run in a
loop beside them on each registry (issue 16, item 13).

At the end it checks, and exits 1 unless all hold: no trial failed, no registered teacher was
lost (each is READY), no teacher load met a missing blob, and every READY blob verifies.

    python examples/soak.py --registry postgresql+psycopg://postgres@127.0.0.1/soak_a \\
        --registry postgresql+psycopg://postgres@127.0.0.1/soak_b \\
        --blobs /shared/soak-teachers --workers 8 --seconds 180

Workers take the registries in turn. Without ``--registry`` it uses ``$RECYCLER_REGISTRY``,
else two SQLite files in a temporary folder (PostgreSQL is what the soak is for: many workers
at once). ``tests/reliability`` runs a short version (3 workers, two registries, ~20 s).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

#: How old an orphan blob or a PENDING row must be before the soak's gc removes it (seconds):
#: short, to make gc race the registrations, which is the point.
GC_GRACE_S = 1.0
STUDY = "soak"


@dataclass
class SoakResult:
    """What the soak saw; ``ok`` says whether every check held."""

    trials: int = 0
    failed_trials: list[str] = field(default_factory=list)
    registered: list[tuple[int, int]] = field(default_factory=list)  # (registry, teacher id)
    lost_teachers: list[tuple[int, int]] = field(default_factory=list)
    missing_blobs: list[str] = field(default_factory=list)
    registry_errors: list[str] = field(default_factory=list)
    kd_trials: int = 0
    gc_runs: int = 0
    verify_runs: int = 0
    maintenance_errors: list[str] = field(default_factory=list)
    final_verify: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        verify = self.final_verify
        return (
            self.trials > 0
            and not self.failed_trials
            and not self.lost_teachers
            and not self.missing_blobs
            and not self.maintenance_errors
            and verify.get("checked") == verify.get("ok")
            and not verify.get("quarantined")
        )


def _worker(where: int, url: str, blobs: str, counter: Any, seconds: float, out: Any) -> None:
    """Train trials for ``seconds`` after a first one (which pays the start-up costs: torch's
    first calls, the first connections); report each trial's outcome (never raises)."""
    try:
        import torch
        from torch import nn

        from recycler.config import RecycleConfig
        from recycler.distiller import Distiller
        from storage import Registry

        torch.set_num_threads(1)
        registry = Registry(url, blobs)
        config = RecycleConfig.from_dict(
            {
                "registry": url,
                "blobs": blobs,
                "summary": False,
                "teachers": {"pool": 3, "quality_gate": False, "seed": 0},
            }
        )
        deadline: float | None = None
        while deadline is None or time.time() < deadline:
            with counter.get_lock():
                number = counter.value
                counter.value += 1
            torch.manual_seed(number)
            net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
            x, y = torch.randn(64, 8), torch.randint(0, 4, (64,))
            kd = Distiller(config, study=STUDY, trial_number=number, registry=registry, model=net)
            kd.plan(epochs=3, steps_per_epoch=4)
            try:
                for _epoch in range(3):
                    for step in range(4):
                        xb, yb = x[step * 16 : (step + 1) * 16], y[step * 16 : (step + 1) * 16]
                        kd.loss(net(xb), yb, xb).backward()
                        with torch.no_grad():  # plain SGD (torch.optim's first use imports
                            for param in net.parameters():  # torch._dynamo: seconds)
                                assert param.grad is not None
                                param -= 0.1 * param.grad
                                param.grad = None
                with torch.no_grad():
                    acc = float((net(x).argmax(1) == y).float().mean())
                outcome = kd.finish("complete", acc)
            except Exception:
                kd.finish("fail", why="the trial raised")
                out.put(("failed", number, traceback.format_exc(limit=5)))
                deadline = deadline or time.time() + seconds
                continue
            info = outcome.info
            out.put(
                (
                    "trial",
                    number,
                    {
                        "registry": where,
                        "teacher": outcome.teacher_id,
                        "kd": bool(info.get("kd")),
                        "skipped": dict(info.get("skipped", {})),
                        "registry_errors": list(info.get("registry_errors", [])),
                    },
                )
            )
            if deadline is None:  # the clock starts after the first trial
                deadline = time.time() + seconds
    except BaseException:
        out.put(("failed", -1, traceback.format_exc(limit=8)))


def _maintenance(url: str, blobs: str, stop: Any, out: Any) -> None:
    """``gc`` and ``verify`` in a loop until told to stop, as an operator's cron would."""
    from storage import Registry

    registry = Registry(url, blobs)
    gc_runs = verify_runs = 0
    while not stop.is_set():
        try:
            registry.gc(grace_seconds=GC_GRACE_S)
            gc_runs += 1
            report = registry.verify()
            verify_runs += 1
            unreadable = getattr(report, "unreadable", ())  # (older recyclers: no such field)
            if report.quarantined or unreadable or getattr(report, "malformed", ()):
                out.put(("maintenance", -1, f"verify found problems: {report}"))
        except Exception as exc:
            if "holds none of the" in str(exc):  # nothing READY yet in the store
                time.sleep(0.2)
                continue
            out.put(("maintenance", -1, f"{type(exc).__name__}: {exc}"))
        time.sleep(0.05)
    out.put(("runs", gc_runs, verify_runs))


def run(urls: list[str], blobs: str, *, workers: int = 8, seconds: float = 180.0) -> SoakResult:
    """Run the soak on the registries ``urls`` sharing the store ``blobs``."""
    from storage import Registry

    for url in urls:
        Registry(url, blobs).upgrade()
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["torch", "safetensors.torch", "storage", "recycler.distiller"])
    counter = ctx.Value("i", 0)
    out = ctx.Queue()
    stop = ctx.Event()
    procs = [
        ctx.Process(
            target=_worker, args=(i % len(urls), urls[i % len(urls)], blobs, counter, seconds, out)
        )
        for i in range(workers)
    ]
    maintenance = [ctx.Process(target=_maintenance, args=(url, blobs, stop, out)) for url in urls]
    for proc in [*maintenance, *procs]:
        proc.start()
    result = SoakResult()
    alive = time.time() + seconds + 180.0  # start-up, and a trial begun at the end, finish
    while any(p.is_alive() for p in procs) and time.time() < alive:
        _drain(out, result, timeout=0.5)
    stop.set()
    procs += maintenance
    for proc in procs:
        proc.join(timeout=5)
        if proc.is_alive():
            proc.kill()
            result.failed_trials.append(f"process {proc.pid} did not finish in time")
    _drain(out, result, timeout=0.5)
    registries = [Registry(url, blobs) for url in urls]
    for where, teacher_id in result.registered:
        if registries[where].get(teacher_id).status.value != "READY":
            result.lost_teachers.append((where, teacher_id))
    reports = [registry.verify() for registry in registries]
    result.final_verify = {
        "checked": sum(r.checked for r in reports),
        "ok": sum(r.ok for r in reports),
        "quarantined": [list(r.quarantined) for r in reports if r.quarantined],
        "unreadable": [list(getattr(r, "unreadable", ())) for r in reports],
    }
    return result


def _drain(out: Any, result: SoakResult, timeout: float) -> None:
    import queue

    while True:
        try:
            kind, number, payload = out.get(timeout=timeout)
        except queue.Empty:
            return
        timeout = 0.01
        if kind == "trial":
            result.trials += 1
            result.kd_trials += int(payload["kd"])
            if payload["teacher"] is not None:
                result.registered.append((payload["registry"], payload["teacher"]))
            for tid, why in payload["skipped"].items():
                if "missing" in why:
                    result.missing_blobs.append(f"trial {number}, teacher {tid}: {why}")
            result.registry_errors += [f"trial {number}: {e}" for e in payload["registry_errors"]]
            result.missing_blobs += [
                f"trial {number}: {e}" for e in payload["registry_errors"] if "missing" in e
            ]
        elif kind == "failed":
            result.failed_trials.append(f"trial {number}: {payload}")
        elif kind == "maintenance":
            result.maintenance_errors.append(str(payload))
        elif kind == "runs":
            result.gc_runs += int(number)
            result.verify_runs += int(payload)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--registry", action="append", help="a registry URL (repeat: they share --blobs)"
    )
    parser.add_argument("--blobs", help="the shared blob store (default: a temporary folder)")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=180.0)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="recycler-soak-") as tmp:
        env = os.environ.get("RECYCLER_REGISTRY")
        urls = args.registry or ([env] if env else None)
        urls = urls or [f"sqlite:///{Path(tmp) / name}" for name in ("soak-a.db", "soak-b.db")]
        blobs = args.blobs or str(Path(tmp) / "teachers")
        result = run(urls, blobs, workers=args.workers, seconds=args.seconds)
    summary = {**asdict(result), "ok": result.ok}
    summary["registered"] = len(result.registered)
    summary["registry_errors"] = result.registry_errors[:10]
    print(json.dumps(summary, indent=2))
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
