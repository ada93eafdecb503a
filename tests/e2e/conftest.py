import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import hookerd  # noqa: E402


@pytest.fixture(autouse=True)
def no_sanitizer_report():
    """Under make test-sanitize (HOOKER_SANITIZE=1): every hookerd this test
    started ended without a sanitizer report, whether the test stopped it or
    the bed's teardown did (autouse: torn down after the bed)."""
    first = len(hookerd.STARTED)
    yield
    if not hookerd.SANITIZE:
        return
    for d in hookerd.STARTED[first:]:
        d.stop()  # already stopped: only looks at its stderr
