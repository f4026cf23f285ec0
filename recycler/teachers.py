"""TeacherPool: teachers loaded lazily from the registry, in eval and inference mode."""

from __future__ import annotations

import contextlib
import copy
import logging
import textwrap
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ._storage import Registry, RegistryUnavailableError, TeacherRecord
from .fused import FusedEnsemble, average_teachers, call_args, can_fuse, logits_of

log = logging.getLogger(__name__)

#: What a training step hands to the teachers: a tensor, a tuple of args, or a dict of kwargs.
Inputs = torch.Tensor | Sequence[Any] | Mapping[str, Any]
BuildFn = Callable[[Mapping[str, Any]], nn.Module]


class Retry(str):
    """Why a teacher did not load this time, for a reason that may pass (the registry busy or
    unreachable): it is not held, so a later refresh tries it again."""


def call_model(model: Callable[..., Any], inputs: Inputs) -> torch.Tensor:
    """Call ``model`` with inputs as the student got them and return its logits."""
    args, kwargs = call_args(inputs)
    return logits_of(model(*args, **kwargs))


class TeacherPool:
    """The teachers of one trial, built and loaded on first use and kept across refreshes.

    Each teacher is built by ``build(params)`` (or as a copy of ``template``, the student's
    architecture), loaded from the registry (checksum verified), frozen and put in eval mode.
    At most ``max_on_device`` teachers live on the student's device; the rest wait on the CPU.
    A teacher that fails to load is skipped with one warning and training goes on.

    Example:
        >>> pool = TeacherPool(registry, template=student)  # doctest: +SKIP
        >>> pool.set_pool(registry.query(study="lr", top_k=5))  # doctest: +SKIP
        >>> logits = pool.logits([0], x)  # mean logits of teacher 0  # doctest: +SKIP
    """

    def __init__(
        self,
        registry: Registry,
        *,
        template: nn.Module | None = None,
        build: BuildFn | None = None,
        max_on_device: int = 5,
        autocast: torch.dtype | None = None,
        fused: bool = True,
    ) -> None:
        if template is None and build is None:
            raise ValueError("TeacherPool needs the student model (template) or build(params)")
        self._registry = registry
        # a private copy of the student's architecture, taken now: later copies must not race
        # the optimizer that is updating the student (teachers may load in a background thread)
        self._blueprint = (
            copy.deepcopy(template).to("cpu") if template is not None and build is None else None
        )
        self._build = build
        self._max_on_device = max(1, max_on_device)
        self._autocast = autocast
        self._fused_ok = fused
        self._models: dict[int, nn.Module] = {}
        self._records: list[TeacherRecord] = []
        self._on_device: OrderedDict[int, None] = OrderedDict()
        self._skipped: dict[int, str] = {}
        self._retired: dict[int, str] = {}  # taught their part: out for the rest of the trial
        self._retry: dict[int, str] = {}  # left out for now; tried again at the next refresh
        #: ids of teachers registered without an output signature, not yet checked
        self.unchecked: set[int] = set()
        self._fused: FusedEnsemble | None = None
        self._device = torch.device("cpu")

    # -- membership ----------------------------------------------------------------------

    @property
    def records(self) -> list[TeacherRecord]:
        """The teachers in the pool, in pool order (only those that loaded)."""
        return list(self._records)

    @property
    def skipped(self) -> Mapping[int, str]:
        """Teachers left out of the pool: id -> why."""
        return dict(self._skipped)

    @property
    def held(self) -> frozenset[int]:
        """Ids of the teachers loaded, given up on or retired (none is loaded again)."""
        return frozenset(self._models) | frozenset(self._skipped) | frozenset(self._retired)

    @property
    def retry(self) -> Mapping[int, str]:
        """Teachers left out for a passing reason (the registry busy): id -> why. A refresh
        tries them again even when the registry has not changed."""
        return dict(self._retry)

    def __len__(self) -> int:
        return len(self._records)

    @property
    def fusion(self) -> str | None:
        """How a step with all teachers runs them fused: "wide", "vmap", or None (a loop)."""
        fused = self._fused if self._fused_ok else None
        return fused.kind if fused is not None and self._pays(fused) else None

    def prepare(self, records: Sequence[TeacherRecord]) -> dict[int, nn.Module | str]:
        """Load the teachers of ``records`` not held yet: id -> model, or why it failed.

        Changes nothing in the pool, so it may run in a background thread while training goes on.
        """
        held = self.held
        return {rec.id: self._load(rec) for rec in records if rec.id not in held}

    def set_pool(
        self,
        records: Sequence[TeacherRecord],
        prepared: Mapping[int, nn.Module | str] | None = None,
    ) -> None:
        """Make ``records`` the pool: load the new ones, keep the held ones, drop the rest.

        A teacher that fails to load is skipped with one warning and never retried.
        """
        loaded = dict(prepared or {})
        loaded.update(self.prepare([r for r in records if r.id not in loaded]))
        keep: list[TeacherRecord] = []
        skipped: list[str] = []
        for rec in records:
            got = loaded.get(rec.id)
            if isinstance(got, Retry):
                self._retry[rec.id] = got
                skipped.append(
                    f"teacher {rec.id} (study {rec.study!r} trial {rec.trial_number}) for now: "
                    f"{got} (tried again at the next refresh)"
                )
            elif isinstance(got, str):
                self._retry.pop(rec.id, None)
                self._skipped[rec.id] = got
                skipped.append(
                    f"teacher {rec.id} (study {rec.study!r} trial {rec.trial_number}): {got}"
                )
            elif got is not None:
                self._retry.pop(rec.id, None)
                self._models[rec.id] = got
                if not rec.output_signature:
                    self.unchecked.add(rec.id)
            if rec.id in self._models:
                keep.append(rec)
        wanted = {r.id for r in keep}
        for tid in [t for t in self._models if t not in wanted]:
            del self._models[tid]
            self._on_device.pop(tid, None)
        if [r.id for r in keep] != [r.id for r in self._records]:
            self._fused = None
        self._records = keep
        if skipped:  # one warning per refresh, however many teachers
            warnings.warn(
                f"recycler: {len(skipped)} teacher(s) skipped: " + "; ".join(skipped),
                RuntimeWarning,
                stacklevel=3,
            )

    def check_outputs(self, indices: Sequence[int], inputs: Inputs, like: torch.Tensor) -> bool:
        """Check the unchecked teachers at ``indices`` against the student's logits ``like``.

        A teacher registered without an output signature (e.g. by ``register_trial`` outside
        a KD loop) is run once on the step's inputs; one whose logits differ from the
        student's in rank or size of the last dimension leaves the pool. True if any left.
        """
        dropped = False
        for i in indices:
            tid = self._records[i].id
            if tid not in self.unchecked:
                continue
            with torch.inference_mode(), self._autocast_ctx():
                out = call_model(self._model_on_device(tid), inputs)
            self.unchecked.discard(tid)
            if out.dim() != like.dim() or out.shape[-1] != like.shape[-1]:
                shape, want = tuple(out.shape), tuple(like.shape)
                self.drop(tid, f"its logits have shape {shape}, the student's {want}")
                dropped = True
        return dropped

    def drop(self, teacher_id: int, reason: str) -> None:
        """Take a teacher out of the pool for the rest of the trial, with one warning."""
        rec = self._remove(teacher_id, reason, self._skipped)
        if rec is not None:
            warnings.warn(
                f"recycler: teacher {teacher_id} (study {rec.study!r} trial {rec.trial_number}) "
                f"dropped: {reason}",
                RuntimeWarning,
                stacklevel=3,
            )

    def retire(self, teacher_id: int, reason: str) -> None:
        """Take a teacher that taught its part out of the pool for the rest of the trial.

        Not a fault, so logged (INFO), not warned.
        """
        rec = self._remove(teacher_id, reason, self._retired)
        if rec is not None:
            log.info("teacher %s (study %r trial %s) retired: %s", teacher_id, rec.study,
                     rec.trial_number, reason)  # fmt: skip

    def _remove(self, teacher_id: int, reason: str, into: dict[int, str]) -> TeacherRecord | None:
        """Out of the pool for the rest of the trial, ``reason`` kept in ``into``; its record."""
        rec = next((r for r in self._records if r.id == teacher_id), None)
        if rec is not None:
            into[teacher_id] = reason
            self.set_pool([r for r in self._records if r.id != teacher_id])
        return rec

    def _load(self, rec: TeacherRecord) -> nn.Module | str:
        try:
            ckpt = self._registry.load(rec)
        except RegistryUnavailableError as exc:  # busy or unreachable: may pass
            return Retry(f"the registry did not answer in time: {_brief(exc)}")
        except (
            Exception
        ) as exc:  # a store's own errors too: the teacher is left out, never the trial
            return f"its checkpoint did not load: {_brief(exc)}"
        try:
            model = self._build(rec.params) if self._build else copy.deepcopy(self._blueprint)
        except Exception as exc:  # the user's build(params): any failure skips the teacher
            return f"build(params) raised {_brief(exc)} (params: {_brief_params(rec.params)})"
        if not isinstance(model, nn.Module):
            return f"build(params) returned {type(model).__name__}, not a torch.nn.Module"
        try:
            _load_weights(model, ckpt.tensors)
        except (RuntimeError, KeyError, ValueError, TypeError) as exc:
            hint = (
                ""
                if self._build
                else "; its architecture differs from the student's: pass "
                "build=lambda params: Model(**params) to build teachers from their params"
            )
            return f"its weights do not fit the model ({_brief(exc)}){hint}"
        model.eval()
        model.requires_grad_(False)
        return model.to("cpu")

    # -- evaluation ----------------------------------------------------------------------

    def to(self, device: torch.device | str) -> TeacherPool:
        """Evaluate on ``device`` from now on (teachers move there lazily)."""
        self._device = torch.device(device)
        self._fused = None
        return self

    def ids(self, indices: Sequence[int]) -> list[int]:
        """Teacher ids of pool positions."""
        return [self._records[i].id for i in indices]

    def logits(self, indices: Sequence[int], inputs: Inputs) -> torch.Tensor:
        """Mean logits of the teachers at ``indices`` for ``inputs`` (a constant: no grad)."""
        with torch.inference_mode(), self._autocast_ctx():
            fused = self._fused_all() if len(indices) == len(self._records) > 1 else None
            if fused is not None:
                return average_teachers(fused.run(inputs)).float()
            return average_teachers(self._each(indices, inputs))

    def each_logits(self, indices: Sequence[int], inputs: Inputs) -> list[torch.Tensor]:
        """Logits of each teacher at ``indices`` separately (for caches and diagnostics)."""
        with torch.inference_mode(), self._autocast_ctx():
            return self._each(indices, inputs)

    def _each(self, indices: Sequence[int], inputs: Inputs) -> list[torch.Tensor]:
        return [
            call_model(self._model_on_device(self._records[i].id), inputs).float() for i in indices
        ]

    def _fused_all(self) -> FusedEnsemble | None:
        """The whole pool as one fused call, where that pays: on accelerators always; on the
        CPU only the wide rewrite (vmap measured slower than the loop there)."""
        if not self._fused_ok:
            return None
        if self._fused is None:
            models = [self._models[r.id] for r in self._records]
            if not can_fuse(models):
                self._fused_ok = False
                return None
            self._fused = FusedEnsemble(models).to(self._device)
        return self._fused if self._pays(self._fused) else None

    def _pays(self, fused: FusedEnsemble) -> bool:
        # on the CPU only the wide rewrite beats the loop; vmap measured ~2x slower there
        return self._device.type != "cpu" or fused.kind == "wide"

    def _model_on_device(self, tid: int) -> nn.Module:
        model = self._models[tid]
        if self._device.type == "cpu":
            return model
        if tid in self._on_device:
            self._on_device.move_to_end(tid)
            return model
        while len(self._on_device) >= self._max_on_device:
            old, _ = self._on_device.popitem(last=False)
            self._models[old].to("cpu")
        self._on_device[tid] = None
        return model.to(self._device)

    def _autocast_ctx(self) -> contextlib.AbstractContextManager[Any]:
        if self._autocast is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self._device.type, dtype=self._autocast)

    def __iter__(self) -> Iterator[TeacherRecord]:
        return iter(self._records)


def _load_weights(model: nn.Module, tensors: Mapping[str, torch.Tensor]) -> None:
    """``load_state_dict``, strict but for ``_extra_state`` entries: a module's extra state is
    not a tensor, so checkpoints leave it out (the model keeps the one it was built with)."""
    result = model.load_state_dict(dict(tensors), strict=False)
    missing = [k for k in result.missing_keys if not k.endswith("_extra_state")]
    if missing or result.unexpected_keys:
        raise RuntimeError(
            "Error(s) in loading state_dict: "
            + (f"missing key(s): {', '.join(missing)}. " if missing else "")
            + (
                f"unexpected key(s): {', '.join(result.unexpected_keys)}."
                if result.unexpected_keys
                else ""
            )
        )


def _brief(exc: BaseException, limit: int = 240) -> str:
    """An exception as one line, shortened at a word boundary."""
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    return textwrap.shorten(text, width=limit, placeholder=" ...")


def _brief_params(params: Mapping[str, Any]) -> str:
    return textwrap.shorten(repr(dict(params)), width=120, placeholder=" ...}")
