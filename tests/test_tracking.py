import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import helpers.tracking as tracking
from helpers.profiles import PROFILES

ROOT = Path(__file__).resolve().parents[1]


def test_write_and_read_a_run_record(tmp_path, monkeypatch):
    monkeypatch.setattr(tracking, "RUNS", tmp_path)
    path = tracking.write_run("demo", profile=PROFILES["cpu"], model="m", steps=3, seconds=1.234,
                              peak_memory_mb=10.06, before={"acc": 0.1}, after={"acc": 0.9}, extra_field=7)
    assert path == tmp_path / "demo.json"
    record = tracking.read_run("demo")
    assert record["profile"] == "cpu" and record["steps"] == 3 and record["seconds"] == 1.23
    assert record["before"] == {"acc": 0.1} and record["after"] == {"acc": 0.9} and record["extra_field"] == 7
    assert record["torch_threads"] == torch.get_num_threads()
    json.loads(path.read_text())  # plain JSON


def test_reading_a_missing_run_says_which_notebook_to_run(tmp_path, monkeypatch):
    monkeypatch.setattr(tracking, "RUNS", tmp_path)
    with pytest.raises(FileNotFoundError, match=r"No record runs/02_qlora.json yet: run notebook 02 in this profile"):
        tracking.read_run("02_qlora")


def test_on_colab_a_missing_record_points_at_google_drive(tmp_path, monkeypatch):
    """Each Colab badge opens a new VM: notebook 07 cannot see 06's runs/ unless both keep it on Google Drive."""
    monkeypatch.setattr(tracking, "RUNS", tmp_path)
    monkeypatch.setattr(tracking, "in_colab", lambda: True)
    with pytest.raises(FileNotFoundError, match=r"run notebook 06 .* own VM.*KEEP_RUNS_ON_DRIVE = True"):
        tracking.read_run("06_dpo")
    with pytest.raises(FileNotFoundError, match=r"KEEP_RUNS_ON_DRIVE = True in the setup cell of notebook 05"):
        tracking.trained_adapter(tmp_path / "05_ppo" / "adapter", "05")
    monkeypatch.setattr(tracking, "RUNS", Path("/content/drive/MyDrive/finetuning-course/runs"))
    assert not tracking.on_colab_without_drive()


def test_measure_sees_a_peak_that_is_gone_by_the_end():
    """300 MB mapped, touched and unmapped inside the block. Mapped by hand: a tensor of that size may instead reuse
    a free region of the heap that earlier tests left behind (glibc serves a large request from its free lists
    first), and freeing it then leaves the RSS where it was."""
    import mmap
    import time

    with tracking.measure() as m:
        block = mmap.mmap(-1, 300 * 2**20)
        block.write(b"\1" * len(block))  # touched: resident
        time.sleep(0.3)
        block.close()
    assert m.seconds >= 0.3
    assert m.peak_mb - m.start_mb > 250, str(m)
    assert m.peak_mb - m.end_mb > 200, str(m)


def test_measure_does_not_depend_on_what_ran_before():
    """Issue 19: notebook 03 measures five methods one after the other. glibc kept what an earlier one freed, and the
    next reused it without the RSS growing: a 200 MB block measured after 400 MB had been freed showed ~0 MB."""
    if not sys.platform.startswith("linux"):
        pytest.skip("glibc's allocator")
    earlier = [torch.ones(25_000) for _ in range(4000)]  # 400 MB in 100 KB pieces: kept in the heap once freed
    del earlier
    with tracking.measure() as m:
        block = [torch.ones(25_000) for _ in range(2000)]  # 200 MB
        time.sleep(0.2)
    del block
    assert m.peak_mb - m.start_mb > 150, str(m)


def test_oom_becomes_advice_naming_the_knobs():
    with pytest.raises(RuntimeError) as error:
        with tracking.oom_advice(PROFILES["t4"], batch_size=16, max_length=256):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    message = str(error.value)
    assert "Out of GPU memory in profile 't4'" in message
    assert "per_device_train_batch_size (now 16)" in message and "max_length (now 256)" in message
    assert "gradient_checkpointing" in message and "load_in_4bit" in message
    assert isinstance(error.value.__cause__, torch.OutOfMemoryError)


def test_other_errors_pass_through_oom_advice():
    with pytest.raises(KeyError):
        with tracking.oom_advice(PROFILES["cpu"]):
            raise KeyError("x")


def test_trained_adapter_finds_the_newest_checkpoint_or_names_the_notebook(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"No trained adapter in runs/checkpoints/06_dpo: run notebook 06"):
        tracking.trained_adapter(tmp_path / "06_dpo", "06")
    for step in (4, 12):
        (tmp_path / "06_dpo" / f"checkpoint-{step}").mkdir(parents=True)
        (tmp_path / "06_dpo" / f"checkpoint-{step}" / "adapter_config.json").write_text("{}")
    assert Path(tracking.trained_adapter(tmp_path / "06_dpo", "06")).name == "checkpoint-12"
    (tmp_path / "05_ppo" / "adapter").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="run notebook 05"):
        tracking.trained_adapter(tmp_path / "05_ppo" / "adapter", "05")  # a folder without an adapter in it
    (tmp_path / "05_ppo" / "adapter" / "adapter_config.json").write_text("{}")
    assert tracking.trained_adapter(tmp_path / "05_ppo" / "adapter", "05").endswith("adapter")


def test_last_checkpoint(tmp_path):
    assert tracking.last_checkpoint(tmp_path / "nothing") is None
    assert tracking.last_checkpoint(tmp_path) is None
    for step in (4, 12, 8):
        (tmp_path / f"checkpoint-{step}").mkdir()
    assert Path(tracking.last_checkpoint(tmp_path)).name == "checkpoint-12"


def test_wandb_without_a_key_logs_offline_and_never_prompts(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB")}
    env.update(HOME=str(tmp_path), COURSE_RUNS_DIR=str(tmp_path / "runs"), PYTHONPATH=str(ROOT))
    code = ("import helpers, wandb; run = helpers.init_wandb('t', {'a': 1}); run.log({'loss': 1.0}); "
            "print('mode', run.settings.mode); wandb.finish(); print('report_to', helpers.report_to())")
    result = subprocess.run([sys.executable, "-c", code], env=env, stdin=subprocess.DEVNULL, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "mode offline" in result.stdout and "report_to wandb" in result.stdout
    assert list((tmp_path / "runs" / "wandb").glob("offline-run-*")), "no offline run written"


def test_wandb_off_switch(monkeypatch):
    monkeypatch.setenv("COURSE_WANDB", "off")
    assert tracking.report_to() == "none"
    assert tracking.init_wandb("x") is None


def test_a_rerun_that_resumes_from_the_final_checkpoint_records_what_training_cost(tmp_path, monkeypatch):
    """Bug: a second run resumed from the final checkpoint, trained 0 steps and recorded ~0 s and the loaded model's
    memory as the training's cost (09 and the README read it)."""
    monkeypatch.setattr(tracking, "RUNS", tmp_path / "runs")
    out = tmp_path / "checkpoints" / "demo"
    profile = PROFILES["cpu"]
    first = tracking.training_cost(tracking.Measurement(seconds=50.0, peak_mb=900.0, flops=4e12), out, None, 12)
    assert (first.seconds, first.peak_mb, first.resumed, first.complete) == (50.0, 900.0, False, True)
    tracking.write_run("demo", profile=profile, model="m", steps=12, before={}, after={}, cost=first)

    rerun = tracking.training_cost(tracking.Measurement(seconds=0.3, peak_mb=400.0, flops=1e9), out,
                                   str(out / "checkpoint-12"), 12)
    record = json.loads(tracking.write_run("demo", profile=profile, model="m", steps=12, before={}, after={},
                                           cost=rerun).read_text())
    assert record["seconds"] == 50.0 and record["peak_memory_mb"] == 900.0 and record["flops"] == 4e12
    assert record["resumed"] is True and record["cost_complete"] is True
    assert [s["steps"] for s in record["sessions"]] == [12, 0]


def test_a_run_resumed_after_an_unrecorded_session_is_marked_incomplete(tmp_path):
    out = tmp_path / "killed"  # the kernel died after checkpoint-4, before any cost was written
    part = tracking.training_cost(tracking.Measurement(seconds=30.0, peak_mb=800.0, flops=2e12), out,
                                  str(out / "checkpoint-4"), 12)
    assert part.resumed and not part.complete and part.steps_this_session == 8
    assert part.seconds == 30.0 and part.flops == 2e12  # what is known: the 8 steps of this session
    again = tracking.training_cost(tracking.Measurement(seconds=0.2, peak_mb=300.0), out, str(out / "checkpoint-12"), 12)
    assert not again.complete  # still unknown: steps 1-4 have no cost on record
    assert again.seconds == 30.0 and [s["seconds"] for s in again.sessions] == [None, 30.0, 0.2]


def test_write_run_needs_a_cost(tmp_path, monkeypatch):
    monkeypatch.setattr(tracking, "RUNS", tmp_path)
    with pytest.raises(ValueError, match="pass cost="):
        tracking.write_run("demo", profile=PROFILES["cpu"], model="m", steps=1, before={}, after={})


def test_step_timer_times_each_step_and_the_median_leaves_first_steps_and_saves_out(tmp_path):
    """The trainers' own step times (issue 18: seconds per step without the first step and checkpoint saves)."""
    from transformers import Trainer, TrainingArguments

    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(4, 1)

        def forward(self, x, labels=None):
            out = self.linear(x).squeeze(-1)
            return {"loss": ((out - labels) ** 2).mean(), "logits": out}

    data = [{"x": torch.randn(4), "labels": torch.tensor(1.0)} for _ in range(8)]
    args = TrainingArguments(output_dir=str(tmp_path / "tiny"), max_steps=4, per_device_train_batch_size=2,
                             save_steps=2, report_to="none", use_cpu=True, logging_steps=1)
    trainer = Trainer(model=Tiny(), args=args, train_dataset=data)
    trainer.add_callback(timer := tracking.StepTimer())
    trainer.train()
    assert len(timer.seconds) == 4 and all(t > 0 for t in timer.seconds)
    cost = tracking.training_cost(tracking.Measurement(seconds=9.0, peak_mb=1.0), tmp_path / "tiny", None, 4,
                                  [0.5, 0.1, 0.2, 0.3])
    assert cost.step_seconds == [0.1, 0.2, 0.3] and tracking.median_step_seconds(cost) == 0.2
    rerun = tracking.training_cost(tracking.Measurement(seconds=0.1, peak_mb=1.0), tmp_path / "tiny",
                                   str(tmp_path / "tiny" / "checkpoint-4"), 4, [])
    assert tracking.median_step_seconds(rerun) == 0.2  # the first session's steps, kept next to the checkpoints


def test_training_run_times_resumes_records_the_cost_and_finishes_wandb(tmp_path, monkeypatch):
    """helpers.training_run: what every training cell repeated (W&B run, step timer, resume, measure, OOM advice,
    training_cost, wandb.finish) around the notebook's own trainer.train call."""
    from transformers import Trainer, TrainingArguments

    class Tiny(torch.nn.Module):  # token embeddings: measure() counts FLOPs from the tokens that go through them
        def __init__(self):
            super().__init__()
            self.embed, self.head = torch.nn.Embedding(10, 4), torch.nn.Linear(4, 1)

        def forward(self, input_ids, labels=None):
            out = self.head(self.embed(input_ids)).mean(dim=(1, 2))
            return {"loss": ((out - labels) ** 2).mean(), "logits": out}

    started = []

    class FakeRun:
        finished = False

        def finish(self):
            self.finished = True

    def fake_init(name, config=None):
        started.append((name, config, FakeRun()))
        return started[-1][2]

    monkeypatch.setattr(tracking, "init_wandb", fake_init)
    data = [{"input_ids": torch.tensor([1, 2, 3]), "labels": torch.tensor(1.0)} for _ in range(8)]

    def make_trainer():
        args = TrainingArguments(output_dir=str(tmp_path / "tiny"), max_steps=4, per_device_train_batch_size=2,
                                 save_steps=4, report_to="none", use_cpu=True, run_name="tiny-run")
        return Trainer(model=Tiny(), args=args, train_dataset=data)

    trainer = make_trainer()
    with tracking.training_run(trainer, PROFILES["cpu"], config={"lr": 0.1}) as run:
        assert run.resume is None and run.cost is None
        trainer.train(resume_from_checkpoint=run.resume)
    assert started[0][:2] == ("tiny-run", {"profile": "cpu", "lr": 0.1})
    assert not started[0][2].finished  # open: an evaluation after training logs into the same run
    assert run.cost.seconds > 0 and run.cost.steps_this_session == 4 and len(run.cost.step_seconds) == 3
    assert run.cost.flops == 8 * 3 * (4 * 4 + 2 * 4)  # 8 examples x 3 tokens x (4N + 2 trainable), N = 4 x 1
    assert not any(isinstance(c, tracking.StepTimer) for c in trainer.callback_handler.callbacks)

    again = make_trainer()  # a rerun: resumes from the final checkpoint, trains nothing, records the first session
    with tracking.training_run(again, PROFILES["cpu"]) as rerun:
        again.train(resume_from_checkpoint=rerun.resume)
    assert rerun.resume.endswith("checkpoint-4") and rerun.cost.resumed and rerun.cost.steps_this_session == 0
    assert rerun.cost.seconds == pytest.approx(run.cost.seconds, abs=0.01)

    oom = make_trainer()
    with pytest.raises(RuntimeError, match=r"per_device_train_batch_size \(now 2\)"):
        with tracking.training_run(oom, PROFILES["t4"]):
            raise torch.OutOfMemoryError("CUDA out of memory")
    assert started[-1][2].finished  # a run whose training failed ends


def test_load_reward_model_gives_05s_scores_and_refuses_one_from_another_profile(tmp_path, monkeypatch, tokenizer):
    """06, 08 and 09 score with notebook 05's reward model. Loaded by load_reward_model it scores as the model 05
    saved; one that 05 trained in another profile (another base model) is refused with an error naming notebook 05,
    where PEFT would fail on mismatched shapes or, with the same shapes, score with the wrong model."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForSequenceClassification

    import helpers

    monkeypatch.setattr(tracking, "RUNS", tmp_path)
    profile = PROFILES["cpu"]
    torch.manual_seed(0)
    base = AutoModelForSequenceClassification.from_pretrained(helpers.model_path(profile.pref_model), num_labels=1)
    base.config.pad_token_id = tokenizer.pad_token_id
    trained = get_peft_model(base, LoraConfig(r=4, task_type="SEQ_CLS", init_lora_weights=False)).eval()
    trained.save_pretrained(tmp_path / "checkpoints" / "05_reward_model")
    prompts = helpers.load_course_dataset("preferences")["test"].select(range(3))["prompt"]
    answers = ["52 euros", "It costs 52 euros.", "Paris"]
    expected = helpers.reward_scores(trained, tokenizer, prompts, answers)

    tracking.write_run("05_reward_model", profile=PROFILES["t4-sim"], model="m", steps=1, before={}, after={},
                       seconds=1.0, peak_memory_mb=1.0)
    with pytest.raises(ValueError, match="in profile 't4-sim', and this notebook runs in 'cpu': run notebook 05"):
        tracking.load_reward_model(profile, tokenizer)
    tracking.write_run("05_reward_model", profile=profile, model="m", steps=1, before={}, after={},
                       seconds=1.0, peak_memory_mb=1.0)
    loaded = tracking.load_reward_model(profile, tokenizer)
    torch.testing.assert_close(helpers.reward_scores(loaded, tokenizer, prompts, answers), expected)
    assert loaded.config.pad_token_id == tokenizer.pad_token_id
    # the record says cpu, but the adapter beside it came from a run on another model (a t4-sim run stopped early)
    config_file = tmp_path / "checkpoints" / "05_reward_model" / "adapter_config.json"
    config = json.loads(config_file.read_text())
    config_file.write_text(json.dumps({**config, "base_model_name_or_path": "/somewhere/tiny-random-llama"}))
    with pytest.raises(ValueError, match="adapter was trained on tiny-random-llama, and profile 'cpu' scores with "
                                         "HuggingFaceTB/SmolLM2-135M-Instruct: run notebook 05"):
        tracking.load_reward_model(profile, tokenizer)
