"""``python -m geneattn`` runs the command line."""

from __future__ import annotations

import sys

from geneattn.cli import main

sys.exit(main())
