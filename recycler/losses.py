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

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from .errors import ConfigError

__all__ = [
    "KDLossFn",
    "KDTerm",
    "average_teachers",
    "combine",
    "get_loss",
    "kd_loss",
    "kl_rows",
    "loss_names",
    "mse_rows",
    "register_loss",
    "standardize_logits",
]

#: A KD loss on rows: ``fn(student [N, C], teacher [N, C], temperature) -> scalar``.
#: Teacher rows arrive detached (and standardised when asked); N >= 1.
KDLossFn = Callable[[Tensor, Tensor, float], Tensor]

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


_REGISTRY: dict[str, KDLossFn] = {"mse": mse_rows, "kl": kl_rows}


def register_loss(name: str, fn: KDLossFn, *, replace: bool = False) -> None:
    """Make ``fn`` available to :func:`kd_loss` (and the config) as ``kind=name``.

    Example:
        >>> register_loss("l1", lambda s, t, tau: (s - t).abs().mean())  # doctest: +SKIP
        >>> kd_loss(student_logits, teacher_logits, kind="l1")  # doctest: +SKIP
    """
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"loss name must be a non-empty string, got {name!r}")
    if not callable(fn):
        raise ConfigError(f"loss {name!r} must be callable, got {fn!r}")
    if name in _REGISTRY and not replace:
        raise ConfigError(f"loss {name!r} is already registered; pass replace=True to override")
    _REGISTRY[name] = fn


def loss_names() -> list[str]:
    """The registered loss names, sorted.

    Example:
        >>> {"kl", "mse"} <= set(loss_names())
        True
    """
    return sorted(_REGISTRY)


def get_loss(name: str) -> KDLossFn:
    """The row loss registered as ``name``; ConfigError listing the known names otherwise.

    Example:
        >>> get_loss("mse") is mse_rows
        True
    """
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ConfigError(
            f"unknown KD loss {name!r}: choose one of {', '.join(loss_names())}"
        ) from None


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


class KDTerm:
    """The KD term with its settings checked once: what a training loop calls every step.

    ``KDTerm(kind, temperature, standardize)(s, t, mask)`` is :func:`kd_loss` with those
    settings. :meth:`target` prepares the teacher's side as the term compares it (detached,
    float, standardised when asked), row by row: a teacher-logit cache can store that and pass
    ``prepared=True``, with the same result to the last bit.

    Example:
        >>> term = KDTerm("mse")
        >>> s, t = torch.randn(8, 10), 20 * torch.randn(8, 10)
        >>> bool(term(s, term.target(t, s), prepared=True) == kd_loss(s, t))
        True
    """

    def __init__(self, kind: str = "mse", temperature: float = 4.0, standardize: bool = True):
        self.fn = get_loss(kind)
        if not temperature > 0:
            raise ConfigError(f"temperature must be > 0, got {temperature!r}")
        self.kind = kind
        self.temperature = float(temperature)
        self.standardize = standardize

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


def average_teachers(logits: Sequence[Tensor] | Tensor) -> Tensor:
    """Mean of several teachers' logits: a list of same-shape tensors or a stacked ``[N, ...]``.

    Example:
        >>> average_teachers([torch.zeros(2, 3), torch.ones(2, 3)])[0]
        tensor([0.5000, 0.5000, 0.5000])
    """
    if isinstance(logits, Tensor):
        if logits.dim() < 1 or logits.shape[0] == 0:
            raise ValueError("average_teachers needs at least one teacher's logits")
        return logits[0] if logits.shape[0] == 1 else logits.mean(dim=0)
    if len(logits) == 0:
        raise ValueError("average_teachers needs at least one teacher's logits")
    if len(logits) == 1:
        return logits[0]
    shapes = {tuple(t.shape) for t in logits}
    if len(shapes) != 1:
        raise ValueError(f"teachers' logits must share one shape, got {sorted(shapes)}")
    total = logits[0].clone()
    for t in logits[1:]:
        total.add_(t)
    return total.div_(len(logits))


def combine(task_loss: Tensor, kd: Tensor, weight: float) -> Tensor:
    """The loss of a distilled step: ``task_loss + weight * kd``.

    Example:
        >>> combine(torch.tensor(2.0), torch.tensor(3.0), 0.5)
        tensor(3.5000)
    """
    return torch.add(task_loss, kd, alpha=weight)  # one autograd node, not two
