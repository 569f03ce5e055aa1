"""``python -m admin``: see admin.cli."""

from __future__ import annotations

import sys

from admin.cli import main

sys.exit(main())
