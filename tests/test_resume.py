"""A killed run continues from its last checkpoint and ends where an uninterrupted run ends."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def train(output_dir, kill_at=0):
    env = dict(os.environ, KILL_AT=str(kill_at), PYTHONPATH=str(ROOT), COURSE_WANDB="off")
    return subprocess.run([sys.executable, str(ROOT / "tests" / "resume_script.py"), str(output_dir)], env=env,
                          capture_output=True, text=True, timeout=300)


def last_json_line(result):
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.slow  # 20-35 s: real training runs
def test_killed_run_resumes_from_last_checkpoint_and_matches_an_uninterrupted_run(tmp_path):
    reference = last_json_line(train(tmp_path / "straight"))
    assert reference["resumed_from"] is None and reference["step"] == 12

    killed = train(tmp_path / "killed", kill_at=6)
    assert killed.returncode == 9  # it really died mid-run
    assert sorted(p.name for p in (tmp_path / "killed").glob("checkpoint-*")) == ["checkpoint-4"]

    resumed = last_json_line(train(tmp_path / "killed"))
    assert resumed["resumed_from"] == "checkpoint-4"
    assert resumed["step"] == 12
    assert resumed["steps_run_here"] == list(range(5, 13))  # steps 1-4 were not trained again
    assert resumed["losses"]["12"] == pytest.approx(reference["losses"]["12"], rel=1e-4)
    assert resumed["weight_sum"] == pytest.approx(reference["weight_sum"], rel=1e-4, abs=1e-5)
    assert resumed["weight_norm"] == pytest.approx(reference["weight_norm"], rel=1e-5)
