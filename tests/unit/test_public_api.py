"""The public API is exactly ``__all__``, sorted, every name importable; importing the package stays cheap."""

from __future__ import annotations

import subprocess
import sys

import manifest_runner


def test_all_is_sorted_and_every_name_resolves() -> None:
    assert manifest_runner.__all__ == sorted(manifest_runner.__all__)
    for name in manifest_runner.__all__:
        assert getattr(manifest_runner, name) is not None


def test_importing_the_package_imports_no_heavy_dependency() -> None:
    code = (
        "import sys, manifest_runner, manifest_runner.cli\n"
        "heavy = [m for m in ('pydantic', 'ruamel', 'requests', 'consul', 'rich', 'watchfiles') if m in sys.modules]\n"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""
