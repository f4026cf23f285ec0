"""``python -m recycler.cli``: the ``recycler`` command."""

from __future__ import annotations

import sys

from . import main

sys.exit(main())
