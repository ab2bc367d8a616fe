"""The run directory's atomic writer: files land under their final name with the user's umask."""

import os
import stat

import pytest

from edgecomp.core.rundir import save_tensors, write_text


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_run_files_follow_the_umask(tmp_path, mask, mode):
    previous = os.umask(mask)
    try:
        write_text(tmp_path / "metrics.jsonl", "{}\n")
        save_tensors(tmp_path / "model.pt", {"x": 1})
    finally:
        os.umask(previous)
    for name in ("metrics.jsonl", "model.pt"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == mode, name  # mkstemp alone gives 0600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.jsonl", "model.pt"]  # no temporary left
