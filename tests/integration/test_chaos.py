"""A short chaos run, as `bench/chaos.py` runs long ones: five SIGKILLs of serve, the bus worker
and the projections worker at random moments, a PostgreSQL restart, and then not one item lost,
doubled or left dangling, the projections identical to a replay and the chain intact."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CHAOS = Path(__file__).resolve().parents[2] / "bench" / "chaos.py"


# The run settles for up to 180 s after its kills; on a loaded machine the whole may take minutes,
# so the script's own 600 s limit governs rather than the suite's per-test default.
@pytest.mark.timeout(660)
def test_a_short_chaos_run_loses_and_doubles_nothing(tmp_path: Path) -> None:
    """Thirty items through retries and revise loops, five kills and a database restart: the
    script's checks find no violation."""
    result = subprocess.run(
        [
            sys.executable,
            str(CHAOS),
            "--kills",
            "5",
            "--items",
            "30",
            "--settle-seconds",
            "180",
            "--workdir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    summary = result.stdout.strip().splitlines()[-1]
    assert "5 kills" in summary
    assert "1 database restart(s)" in summary
    assert "30/30 items done" in summary
    assert "0 violation(s), projections identical, chain intact" in summary
