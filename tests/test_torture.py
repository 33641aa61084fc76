"""Tailing survives rotation, truncation and restarts of the real process without loss, and
a SIGKILL makes the next process read again only what the killed one did since its last
checkpoint."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests import torture

pytestmark = pytest.mark.e2e


@pytest.mark.slow
def test_torture_run_loses_nothing_and_reads_little_again(tmp_path):
    """The issue's bar: 100k records through 20 rotations, 5 copytruncates and 6 restarts
    (3 of them SIGKILL): nothing lost, and what the SIGKILLs make the exporter read again
    is at most 2% of what was written (checkpoints come far more often than once a second)."""
    result = torture.run(records=100_000, rotations=20, truncations=5, restarts=6, seed=7,
                         workdir=tmp_path)
    assert result.written >= 100_000
    assert result.rotations >= 20 and result.truncations >= 5
    assert result.sigterms + result.sigkills >= 6 and result.sigkills >= 3
    assert result.persisted == result.written, (result, tmp_path)  # none lost or counted twice
    assert result.reread <= 0.02 * result.written, (result, tmp_path)
    assert result.duplicates_after_kill
    assert all(seen <= bound for seen, bound in result.duplicates_after_kill)
    assert result.reread <= sum(bound for _, bound in result.kills)


@pytest.mark.slow
@settings(max_examples=3, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    records=st.integers(min_value=500, max_value=4000),
    rotations=st.integers(min_value=0, max_value=3),
    truncations=st.integers(min_value=0, max_value=2),
    restarts=st.integers(min_value=1, max_value=3),
    seed=st.integers(min_value=0, max_value=10_000),
)
# found by hypothesis: SIGKILL right after a copytruncate, before any periodic checkpoint
@example(records=1200, rotations=0, truncations=1, restarts=2, seed=1827)
def test_any_interleaving_of_operations_loses_nothing(
    tmp_path_factory, records, rotations, truncations, restarts, seed
):
    """Appends, rotations, copytruncates, SIGTERMs and SIGKILLs in any order: nothing lost,
    and what the kills make the exporter read again is within their bounds."""
    workdir = tmp_path_factory.mktemp("torture")
    result = torture.run(records, rotations, truncations, restarts, seed, workdir=workdir)
    assert result.persisted == result.written == records, (result, workdir)
    assert all(seen <= bound for seen, bound in result.duplicates_after_kill)
    assert len(result.kills) == result.sigkills
    assert result.reread <= sum(bound for _, bound in result.kills), (result, workdir)
