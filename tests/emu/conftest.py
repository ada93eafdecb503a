"""Fixtures for the link emulator's tests: beds whose link runs hooker-linkemu."""
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import testbed  # noqa: E402


@pytest.fixture
def emu_bed():
    """emu_bed(LinkSpec) -> a live TwoHosts over the emulator; closed after the test."""
    reason = testbed.require_root()
    if reason:
        pytest.skip(reason)
    beds = []

    def make(spec):
        bed = testbed.TwoHosts(link=spec)
        bed.__enter__()
        beds.append(bed)
        return bed

    yield make
    for bed in beds:
        bed.close()

