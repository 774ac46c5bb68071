"""``python -m semcache.simulator``: see ``cli.main``."""

from __future__ import annotations

from .cli import main

raise SystemExit(main())
