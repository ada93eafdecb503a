"""Shared pytest fixtures: `bed`, a fresh two-host test bed per test (testbed.py)."""
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import testbed  # noqa: E402


@pytest.fixture
def bed():
    """Hosts a and b joined by a bare veth; torn down even when the test fails."""
    reason = testbed.require_root()
    if reason:
        pytest.skip(reason)
    with testbed.TwoHosts() as b:
        yield b
