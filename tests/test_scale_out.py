"""Scaling out: scripts/train.py (LoRA, SFT and DPO) on 2 CPU processes (DDP over gloo) gives the losses of 1 process
with the same global batch, and the accelerate configs for DDP, FSDP and DeepSpeed load with accelerate's own parser."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "train.py"
CONFIGS = sorted((ROOT / "configs" / "accelerate").glob("*.yaml"))


def train(launcher, tmp_path, name, method, per_device_batch_size):
    """Run the script under `launcher` for 4 steps; returns {"world_size", "losses"}."""
    env = {**os.environ, "COURSE_PROFILE": "cpu", "COURSE_RUNS_DIR": str(tmp_path), "OMP_NUM_THREADS": "1",
           "HF_HUB_OFFLINE": "1"}
    losses = tmp_path / f"{name}.json"
    result = subprocess.run([*launcher, str(SCRIPT), "--method", method, "--tiny", "--max-steps", "4",
                             "--per-device-batch-size", str(per_device_batch_size),
                             "--output-dir", str(tmp_path / name), "--losses", str(losses)],
                            env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(losses.read_text())


@pytest.mark.slow  # 20-35 s: real training runs
@pytest.mark.parametrize("method, port", [("sft", 29517), ("dpo", 29518)])
def test_two_processes_equal_one_with_the_same_global_batch(tmp_path, method, port):
    single = train([sys.executable], tmp_path, "single", method, per_device_batch_size=4)
    # torchrun is what `accelerate launch` starts for several processes; accelerate runs several CPU processes
    # only through MPI, which a laptop or CI rarely has
    ddp = train([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port)],
                tmp_path, "ddp", method, per_device_batch_size=2)
    assert single["world_size"] == 1 and ddp["world_size"] == 2
    assert len(single["losses"]) == len(ddp["losses"]) == 4
    for step, (one, two) in enumerate(zip(single["losses"], ddp["losses"]), start=1):
        assert two == pytest.approx(one, rel=1e-4), f"step {step}: 1 process {one:.5f}, 2 processes {two:.5f}"
    assert single["losses"][-1] < single["losses"][0]  # and it trains


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_accelerate_configs_load(path):
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(path))
    assert config.num_processes == 2 and not config.use_cpu
    assert config.distributed_type.value in {"MULTI_GPU", "FSDP", "DEEPSPEED"}
