"""Locks on cluster file systems (issue 21, defect 9): where flock is missing (ENOSYS, as on some Lustre and NFS
mounts) or may be node-local (network file systems), a lock file naming host and pid takes its place; it refuses
a second writer, is removed when released, and one left by a dead process of this host is taken over."""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from core import provenance
from tests.conftest import ROOT


def hold(lock: Path, env: dict[str, str]) -> subprocess.Popen:
    script = (
        "import time; from core import provenance\n"
        f"with provenance.exclusive({str(lock)!r}, 'model m'):\n    print('held', flush=True); time.sleep(60)"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, text=True, env={**os.environ, **env}
    )
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_the_lock_file_refuses_a_second_writer_naming_host_and_pid_and_is_removed(tmp_path, monkeypatch):
    monkeypatch.setenv(provenance.LOCKS_ENV, "file")
    lock = tmp_path / "m" / ".lock"
    holder = hold(lock, {provenance.LOCKS_ENV: "file"})
    try:
        held = lock.with_name(".lock.held")
        assert f"pid {holder.pid}" in held.read_text()
        with (
            pytest.raises(
                provenance.Busy, match=rf"model m is being written .*host {socket.gethostname()}, pid {holder.pid}"
            ),
            provenance.exclusive(lock, "model m"),
        ):
            pass
    finally:
        holder.terminate()
        holder.wait()
    # SIGTERM ended the holder without its finally: the file is stale, and this host sees that its pid is gone
    with provenance.exclusive(lock, "model m"):
        assert f"pid {os.getpid()}" in held.read_text()
    assert not held.exists()


def test_a_lock_file_of_another_host_is_reported_with_how_to_clear_it(tmp_path, monkeypatch):
    monkeypatch.setenv(provenance.LOCKS_ENV, "file")
    lock = tmp_path / ".lock"
    held = tmp_path / ".lock.held"
    held.write_text("host node042, pid 1, cwd /x, since 2026-12-01T00:00:00+00:00")
    with (
        pytest.raises(
            provenance.Busy, match=r"node042, pid 1.*If no such run is alive on node042, delete .*\.lock\.held"
        ),
        provenance.exclusive(lock, "model m"),
    ):
        pass
    assert held.exists()  # never removed: it is another run's


def test_flock_failing_with_enosys_falls_back_to_the_lock_file(tmp_path, monkeypatch, capsys):
    def no_flock(fd, op):
        raise OSError(errno.ENOSYS, os.strerror(errno.ENOSYS))

    monkeypatch.setenv(provenance.LOCKS_ENV, "auto")
    monkeypatch.setattr(fcntl, "flock", no_flock)
    lock = tmp_path / ".lock"
    with provenance.exclusive(lock, "model m"):
        assert (tmp_path / ".lock.held").exists()
        assert "flock does not work" in capsys.readouterr().out
        with pytest.raises(provenance.Busy, match=rf"pid {os.getpid()}"), provenance.exclusive(lock, "model m"):
            pass
    assert not (tmp_path / ".lock.held").exists()


def test_network_file_systems_choose_the_lock_file(tmp_path, monkeypatch):
    assert provenance.filesystem_type("/proc/self") == "proc"
    monkeypatch.setenv(provenance.LOCKS_ENV, "auto")
    monkeypatch.setattr(provenance, "filesystem_type", lambda path: "lustre")
    assert provenance.lock_kind(tmp_path / ".lock") == "file"
    monkeypatch.setattr(provenance, "filesystem_type", lambda path: "nfs4")
    assert provenance.lock_kind(tmp_path / ".lock") == "file"
    monkeypatch.setattr(provenance, "filesystem_type", lambda path: "ext4")
    assert provenance.lock_kind(tmp_path / ".lock") == "flock"
    monkeypatch.setenv(provenance.LOCKS_ENV, "sometimes")
    with pytest.raises(ValueError, match="DIFFUSION_STUDY_LOCKS='sometimes'"):
        provenance.lock_kind(tmp_path / ".lock")
