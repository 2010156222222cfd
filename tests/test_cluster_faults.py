"""Signals and two processes on one run folder, end to end (tests/cluster_faults.py): each scenario runs real
`protosphere` processes and returns what broke the contract."""

from __future__ import annotations

import pytest

import cluster_faults  # tests/cluster_faults.py, also a command of its own


@pytest.mark.parametrize("name", list(cluster_faults.SCENARIOS))
def test_cluster_fault(tmp_path, name):
    assert cluster_faults.SCENARIOS[name](tmp_path) == []


def test_resume_command_is_parsed_from_the_line():
    line = (
        "interrupted by SIGTERM at task 1, step 14; runs/a b/checkpoints/last.ckpt holds it; continue with: "
        "protosphere run 'runs/a b/config.yaml' --resume"
    )
    assert cluster_faults.resume_command(line) == ["run", "runs/a b/config.yaml", "--resume"]


def test_run_lock_refuses_a_second_holder_and_dies_with_its_holder(tmp_path):
    """The lock refuses a second holder with the holder's PID, passes to a child process (the background report of
    a run) and disappears when the last process holding it dies, without anyone removing the file."""
    import os
    import signal
    import subprocess
    import sys

    from protosphere.errors import RunError
    from protosphere.runs.rundir import RunLock

    lock = RunLock(tmp_path).acquire()
    with pytest.raises(RunError, match=f"in use by process {os.getpid()} "):
        RunLock(tmp_path, purpose="report").acquire()
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], pass_fds=(lock.inheritable(),))
    try:
        lock.hand_over()
        with pytest.raises(RunError, match="in use by"):
            RunLock(tmp_path).acquire()
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert (tmp_path / "run.lock").exists()  # a stale file, locked by nobody
    second = RunLock(tmp_path).acquire()
    assert (tmp_path / "run.lock").read_text().startswith(f"{os.getpid()} ")
    second.release()
    assert not (tmp_path / "run.lock").exists()
