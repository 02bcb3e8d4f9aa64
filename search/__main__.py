"""``python -m poolnas.search`` runs the ``poolnas`` command line."""

from __future__ import annotations

import sys

from poolnas.search._cli import main

sys.exit(main())
