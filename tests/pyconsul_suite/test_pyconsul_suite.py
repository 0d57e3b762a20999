"""py-consul's own API suite passes through our transport wherever it passes with py-consul's client (see
:mod:`tests.pyconsul_suite.harness`; run it alone with ``python -m tests.pyconsul_suite.harness``)."""

from __future__ import annotations

import pytest

from tests.pyconsul_suite.harness import run_suite

pytestmark = pytest.mark.consul


def test_no_test_passes_with_py_consuls_client_and_fails_with_ours(consul_binary: str) -> None:
    comparison = run_suite()
    print("\n" + comparison.summary())
    assert len(comparison.native) >= 100, "the suite did not run (see the JUnit reports)"
    assert comparison.regressions == [], comparison.summary()
