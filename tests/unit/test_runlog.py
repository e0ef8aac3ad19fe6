"""Run records (lora_exp/runlog.py): the commit a run names is the one its process loaded."""
import subprocess

from lora_exp import runlog


def test_git_sha_is_the_commit_at_process_start(monkeypatch):
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=runlog.Path(runlog.__file__).parent,
                          capture_output=True, text=True).stdout.strip()
    assert runlog.git_sha() == runlog._SHA_AT_START and runlog._SHA_AT_START

    def moved(*args, **kwargs):  # HEAD moving under a running sweep must not change its records
        raise AssertionError("git asked again")

    monkeypatch.setattr(subprocess, "run", moved)
    assert runlog.git_sha() == runlog._SHA_AT_START
    assert head == runlog._SHA_AT_START
