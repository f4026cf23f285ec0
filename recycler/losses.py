"""Knowledge-distillation losses by name: ``mse`` on logits and ``kl`` with temperature.

The KD term is computed on rows of logits: class logits ``[B, C]`` are B rows; token logits
``[B, T, V]`` are ``B*T`` rows, or only the rows a ``[B, T]`` mask selects (MLM: the masked
positions), picked *before* any arithmetic so no extra ``[B, T, V]`` tensor is made.

The total loss of a distilled step is ``task + weight * kd`` (:func:`combine`), where the
teacher logits are the mean over the step's teachers (:func:`average_teachers`).

Stability: by default each row's logits are z-scored over the class dim, for the student and
the teacher alike (logit standardisation, Sun et al. 2024, with a variance floor). Teachers of a
real sweep can have large logits (std 10-20, peaks near 100); raw MSE towards them gives
gradients that dwarf the task loss and collapses students at ordinary learning rates.
Standardised logits have mean 0 and std at most 1, so the MSE target and the KD gradient are
bounded whatever the teacher's scale and the student's state (tests/recycler/test_losses.py).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from ._names import LOSSES
from .errors import ConfigError
from .fused import average_teachers

__all__ = [
    "KDLossFn",
    "KDTerm",
    "LossFn",
    "LossSettings",
    "average_teachers",
    "combine",
    "get_loss",
    "kd_loss",
    "kl_rows",
    "loss_names",
    "mse_rows",
    "register_loss",
    "task_loss_of",
    "standardize_logits",
]

#: A KD loss on rows: ``fn(student [N, C], teacher [N, C], temperature) -> scalar``.
#: Teacher rows arrive detached (and standardised when asked); N >= 1.
KDLossFn = Callable[[Tensor, Tensor, float], Tensor]

#: What :func:`register_loss` takes: a :data:`KDLossFn` that may also take options of its own
#: as keyword arguments, ``fn(student, teacher, temperature, *, beta=1.0)``.
LossFn = Callable[..., Tensor]

#: Added to each row's variance before dividing (see :func:`standardize_logits`).
VAR_EPS = 1.0


def mse_rows(student: Tensor, teacher: Tensor, temperature: float) -> Tensor:
    """Mean squared error over all elements of the rows (``F.mse_loss``'s default reduction).

    That is ``sum((s - t)**2) / (N * C)``: averaged over rows and over classes, as in the
    papers (Liu et al. 2022; Blakeney et al. 2022). ``temperature`` is ignored.

    Example:
        >>> mse_rows(torch.zeros(2, 3), torch.ones(2, 3), 1.0)
        tensor(1.)
    """
    del temperature
    # the call F.mse_loss ends in (reduction 1 = mean; torch's stub says str, the binding
    # takes the enum as F.mse_loss passes it), without its Python-side broadcasting checks
    # (the shapes are equal here), which cost ~10% of the KD term on [128, 10] logits
    out: Tensor = torch._C._nn.mse_loss(student, teacher, 1)  # type: ignore[arg-type]
    return out


def kl_rows(student: Tensor, teacher: Tensor, temperature: float) -> Tensor:
    """Hinton's KD: ``tau**2 * KL(softmax(t / tau) || softmax(s / tau))``, mean over rows.

    Example:
        >>> float(kl_rows(torch.zeros(2, 3), torch.zeros(2, 3), 4.0))
        0.0
    """
    log_p_student = torch.log_softmax(student / temperature, dim=-1)
    log_p_teacher = torch.log_softmax(teacher / temperature, dim=-1)
    kl = torch.nn.functional.kl_div(
        log_p_student, log_p_teacher, reduction="batchmean", log_target=True
    )
    return kl * (temperature * temperature)


def register_loss(name: str, fn: LossFn, *, replace: bool = False) -> None:
    """Make ``fn`` available to :func:`kd_loss`, :class:`KDTerm` and the config as ``name``.

    ``fn(student, teacher, temperature, **options)`` gets rows as :data:`KDLossFn` does; its
    keyword parameters after those three are its options (``distill.loss_options``), checked
    by name when a config or a :class:`KDTerm` is built. ConfigError if ``name`` is taken,
    unless ``replace``.

    Example:
        >>> def l1(s, t, tau, *, beta=1.0):
        ...     return beta * (s - t).abs().mean()
        >>> register_loss("l1", l1)  # doctest: +SKIP
        >>> KDTerm("l1", options={"beta": 0.5})(student_logits, teacher_logits)  # doctest: +SKIP
    """
    LOSSES.register(name, fn, replace=replace)


_REGISTRY = LOSSES  # the registry itself (in the torch-free recycler._names)
register_loss("mse", mse_rows)
register_loss("kl", kl_rows)


def loss_names() -> list[str]:
    """The registered loss names, sorted.

    Example:
        >>> {"kl", "mse"} <= set(loss_names())
        True
    """
    return sorted(LOSSES.names())


def get_loss(name: str) -> LossFn:
    """The row loss registered as ``name``; ConfigError listing the known names otherwise.

    Example:
        >>> get_loss("mse") is mse_rows
        True
    """
    return LOSSES.get(name)


def standardize_logits(logits: Tensor, eps: float = VAR_EPS) -> Tensor:
    """Z-score each row over the last (class) dim: ``(x - mean) / sqrt(var + eps)``.

    ``var`` is the population variance. ``eps`` (1 nat squared by default) keeps rows whose
    logits spread much less than a nat from being blown up to unit scale: without it the
    gradient through the student's own std grows like 1/std, and a freshly zero-initialised
    head (std 0) gets a gradient of about 1/sqrt(eps). Rows of real logits (std >= ~3) are
    z-scored to within a few percent.

    Example:
        >>> standardize_logits(torch.tensor([[-10.0, 10.0], [1.0, 1.0]]))
        tensor([[-0.9950,  0.9950],
                [ 0.0000,  0.0000]])
    """
    # layer_norm is exactly this formula (population variance, eps inside the root) in one
    # fused kernel with a fused backward: ~5x cheaper per step than var_mean and friends
    return torch.layer_norm(logits, logits.shape[-1:], None, None, eps)


def _rows(logits: Tensor, mask: Tensor | None, name: str) -> Tensor:
    """``[..., C]`` logits as ``[N, C]`` rows, only the masked ones when a mask is given."""
    if logits.dim() < 2:
        raise ValueError(
            f"{name} logits must be [B, C] or [B, T, V], got shape {tuple(logits.shape)}"
        )
    if mask is None:
        return logits.reshape(-1, logits.shape[-1])
    return logits[mask]


def _check_mask(student: Tensor, mask: Tensor | None) -> None:
    if mask is None:
        return
    if mask.dtype != torch.bool:
        raise ValueError(f"mask must be a bool tensor, got dtype {mask.dtype}")
    if tuple(mask.shape) != tuple(student.shape[:-1]):
        raise ValueError(
            f"mask shape {tuple(mask.shape)} must equal the logits' shape without the class dim "
            f"{tuple(student.shape[:-1])} (logits {tuple(student.shape)})"
        )


_HALF = (torch.float16, torch.bfloat16)


class LossSettings(Protocol):
    """What :meth:`KDTerm.from_config` reads: a :class:`~recycler.config.DistillConfig` has it.

    Example:
        >>> from recycler.config import DistillConfig
        >>> KDTerm.from_config(DistillConfig(loss="kl", temperature=2.0)).temperature
        2.0
    """

    @property
    def loss(self) -> str: ...
    @property
    def loss_options(self) -> Mapping[str, Any]: ...
    @property
    def temperature(self) -> float: ...
    @property
    def standardize(self) -> bool: ...


class KDTerm:
    """The KD term with its settings checked once: what a training loop calls every step.

    ``KDTerm(kind, temperature, standardize, options=...)(s, t, mask)`` is :func:`kd_loss`
    with those settings; ``options`` go to the loss as keyword arguments (a built-in takes
    none). :meth:`from_config` builds it from the ``distill`` section. :meth:`target` prepares
    the teacher's side as the term compares it (detached, float, standardised when asked), row
    by row: a teacher-logit cache can store that and pass ``prepared=True``, with the same
    result to the last bit.

    Example:
        >>> term = KDTerm("mse")
        >>> s, t = torch.randn(8, 10), 20 * torch.randn(8, 10)
        >>> bool(term(s, term.target(t, s), prepared=True) == kd_loss(s, t))
        True
    """

    def __init__(
        self,
        kind: str = "mse",
        temperature: float = 4.0,
        standardize: bool = True,
        *,
        options: Mapping[str, Any] | None = None,
    ):
        fn = get_loss(kind)
        options = dict(options or {})
        LOSSES.check_options(kind, options, "options")
        if not temperature > 0:
            raise ConfigError(f"temperature must be > 0, got {temperature!r}")
        # no options: the function itself, so a built-in's call is exactly what it was
        self.fn: KDLossFn = functools.partial(fn, **options) if options else fn
        self.kind = kind
        self.options = options
        self.temperature = float(temperature)
        self.standardize = standardize

    @classmethod
    def from_config(cls, distill: LossSettings) -> KDTerm:
        """The term a ``distill`` config section describes: loss, its options, τ, standardize.

        Example:
            >>> from recycler.config import DistillConfig
            >>> KDTerm.from_config(DistillConfig(loss="kl")).kind
            'kl'
        """
        return cls(
            distill.loss,
            distill.temperature,
            distill.standardize,
            options=distill.loss_options,
        )

    def target(self, teacher_logits: Tensor, student_logits: Tensor) -> Tensor:
        """Teacher logits as the term compares them with these student logits."""
        dtype = torch.float32 if student_logits.dtype in _HALF else student_logits.dtype
        teacher = teacher_logits.detach()
        if teacher.dtype != dtype:
            teacher = teacher.to(dtype)
        if self.standardize and teacher.numel():
            teacher = standardize_logits(teacher)  # detached: no graph; a plain tensor now
        if teacher.is_inference():
            # Made under torch.inference_mode (as teachers run): autograd may not save it as is.
            teacher = teacher.clone()
        return teacher

    def __call__(
        self,
        student_logits: Tensor,
        teacher_logits: Tensor,
        mask: Tensor | None = None,
        *,
        prepared: bool = False,
    ) -> Tensor:
        """The KD term (a scalar); ``prepared``: the teacher logits came from :meth:`target`."""
        if student_logits.shape != teacher_logits.shape:
            raise ValueError(
                f"student logits {tuple(student_logits.shape)} and teacher logits "
                f"{tuple(teacher_logits.shape)} must have the same shape"
            )
        if mask is None and student_logits.dim() == 2:  # class logits: the rows as they are
            student, teacher = student_logits, teacher_logits
        else:
            _check_mask(student_logits, mask)
            student = _rows(student_logits, mask, "student")
            teacher = _rows(teacher_logits.detach(), mask, "teacher")
        if student.dtype in _HALF:
            student = student.float()
        if not prepared:
            teacher = self.target(teacher, student)
        if student.shape[0] == 0:  # nothing masked: a zero that still has a graph to the student
            return student.sum() * 0.0
        if self.standardize:
            student = standardize_logits(student)
        return self.fn(student, teacher, self.temperature)


def kd_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    *,
    kind: str = "mse",
    temperature: float = 4.0,
    standardize: bool = True,
    mask: Tensor | None = None,
) -> Tensor:
    """The KD term (a scalar) pulling the student's logits towards the teacher's.

    ``student_logits`` and ``teacher_logits`` have one shape, ``[B, C]`` or ``[B, T, V]``;
    ``mask`` (bool, the logits' shape without the class dim) keeps only the rows where it is
    True. Teacher logits are constants (detached). Half-precision logits are computed in float32.
    ``kind="mse"``: mean over all kept elements; ``kind="kl"``: ``tau**2 * KL``, mean over rows.
    A loop calling it every step can build a :class:`KDTerm` once instead.

    Example:
        >>> s = torch.randn(8, 10, requires_grad=True)
        >>> t = 20 * torch.randn(8, 10)
        >>> loss = kd_loss(s, t)  # MSE between z-scored logits
        >>> loss.backward(); s.grad.shape
        torch.Size([8, 10])
    """
    return KDTerm(kind, temperature, standardize)(student_logits, teacher_logits, mask)


def combine(task_loss: Tensor, kd: Tensor, weight: float) -> Tensor:
    """The loss of a distilled step: ``task_loss + weight * kd``.

    Example:
        >>> combine(torch.tensor(2.0), torch.tensor(3.0), 0.5)
        tensor(3.5000)
    """
    return torch.add(task_loss, kd, alpha=weight)  # one autograd node, not two


def task_loss_of(logits: Tensor, target: Tensor | None) -> Tensor:
    """The default task loss: cross-entropy over class logits ``[B, C]`` or token logits
    ``[..., V]`` (labels -100 ignored), what ``kd.loss`` uses without ``task_loss=``.

    Example:
        >>> round(float(task_loss_of(torch.zeros(2, 4), torch.tensor([0, 3]))), 4)  # log 4
        1.3863
    """
    if target is None:
        raise ValueError("loss() needs the target labels or task_loss=<your task loss>")
    if logits.dim() == 2:  # no reshape: one autograd node fewer per step
        return F.cross_entropy(logits, target)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1))
