"""recycler: hyperparameter search that recycles prior runs as distillation teachers."""

from __future__ import annotations

from storage import Registry, TeacherQuery, TeacherRecord

__version__ = "0.1.0"

__all__ = ["Registry", "TeacherQuery", "TeacherRecord", "__version__"]
