"""How many examples a property test generates: the full number in the whole suite, a tenth in the quick one
(``scripts/test --quick`` sets ``CONSUL_MANIFEST_QUICK=1``), so the inner loop stays within seconds."""

from __future__ import annotations

import os


def examples(full: int) -> int:
    if os.environ.get("CONSUL_MANIFEST_QUICK") == "1":
        return max(10, full // 10)
    return full
