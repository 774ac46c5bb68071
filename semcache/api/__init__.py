"""HTTP routers only; the logic lives in ``cache``, ``levers`` and ``upstream``."""
