"""scripts/colab_setup.py's decisions, without pip or Colab: what to install, when to restart, torchao, .pth, Drive."""
import importlib.util
import os
import re
import signal
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("colab_setup", ROOT / "scripts" / "colab_setup.py")
setup = importlib.util.module_from_spec(spec)
spec.loader.exec_module(setup)

COURSE_LIBRARIES = {"transformers", "trl", "peft", "datasets", "sentence-transformers", "bitsandbytes", "accelerate",
                    "wandb", "gguf"}


def test_requirements_colab_pins_exactly_the_course_libraries():
    pins = setup.read_pins()
    assert set(pins) == COURSE_LIBRARIES
    assert all(re.fullmatch(r"[0-9][0-9A-Za-z.]*", version) for version in pins.values())


def test_read_pins_refuses_a_range(tmp_path):
    (tmp_path / "r.txt").write_text("# a comment\npeft==0.21.0\n\ntrl>=1.0\n")
    with pytest.raises(ValueError, match="trl>=1.0"):
        setup.read_pins(tmp_path / "r.txt")


def test_only_missing_or_other_versions_are_installed():
    pins = {"transformers": "5.23.0", "trl": "1.16.0", "peft": "0.21.0", "gguf": "0.19.0"}
    colab = {"transformers": "5.15.0", "trl": None, "peft": "0.21.0", "gguf": "0.19.0"}
    assert setup.to_install(pins, colab) == ["transformers==5.23.0", "trl==1.16.0"]
    assert setup.to_install(pins, dict(pins)) == []


def test_torch_is_held_at_the_installed_build():
    pins = {"peft": "0.21.0"}
    installed = {"torch": "2.11.0+cu128", "torchvision": "0.26.0+cu128", "torchaudio": None}
    assert setup.constraints(pins, installed) == ["torch==2.11.0+cu128", "torchvision==0.26.0+cu128", "peft==0.21.0"]


@pytest.mark.parametrize("version, too_old", [
    (None, False), ("0.10.0", True), ("0.15.9", True), ("0.16.0.dev20260101", True), ("0.16.0rc1", True),
    ("0.16.0", False), ("0.16.0+cu128", False), ("0.17.1", False), ("1.0", False),
])
def test_torchao_rule(version, too_old):
    assert setup.torchao_too_old(version) is too_old


def test_torchao_minimum_is_peft_s():
    """peft raises for any LoRA target next to a torchao below its TORCHAO_MINIMUM_VERSION: ours must be the same."""
    source = Path(importlib.util.find_spec("peft").submodule_search_locations[0], "import_utils.py").read_text()
    peft_minimum = re.search(r'TORCHAO_MINIMUM_VERSION = packaging\.version\.parse\("([^"]+)"\)', source)
    assert peft_minimum, "peft/import_utils.py no longer sets TORCHAO_MINIMUM_VERSION as it did: check the rule"
    assert setup.TORCHAO_MINIMUM == peft_minimum[1]


def test_changes_lists_added_changed_and_removed():
    before = {"pyarrow": "18.1.0", "torchao": "0.10.0", "numpy": "2.1.3"}
    after = {"pyarrow": "26.0.1", "numpy": "2.1.3", "trl": "1.16.0"}
    assert setup.changes(before, after) == {"pyarrow": ("18.1.0", "26.0.1"), "torchao": ("0.10.0", None),
                                            "trl": (None, "1.16.0")}


def test_restart_iff_a_changed_distribution_was_imported():
    changed = {"pyarrow": ("18.1.0", "26.0.1"), "transformers": ("5.15.0", "5.23.0"), "trl": (None, "1.16.0"),
               "pyyaml": ("6.0.3", "6.0.4")}
    top_level = {"pyarrow": {"pyarrow"}, "transformers": {"transformers"}, "trl": {"trl"}, "pyyaml": {"yaml"}}.get
    assert setup.loaded_changes(changed, {"pyarrow": 1, "numpy": 1}, top_level) == {"pyarrow": ("18.1.0", "26.0.1")}
    assert setup.loaded_changes(changed, {"yaml": 1}, top_level) == {"pyyaml": ("6.0.3", "6.0.4")}
    assert setup.loaded_changes(changed, {"numpy": 1, "trl": 1}, top_level) == {}  # trl is new: nothing old loaded
    assert setup.loaded_changes({"torchao": ("0.10.0", None)}, {"torchao": 1}) == {"torchao": ("0.10.0", None)}


def test_top_level_modules_of_installed_distributions():
    assert "yaml" in setup.top_level_modules("PyYAML")
    assert {"matplotlib", "mpl_toolkits"} <= setup.top_level_modules("matplotlib")
    assert setup.top_level_modules("sentence-transformers") == {"sentence_transformers"}
    assert setup.top_level_modules("no-such-dist") == {"no_such_dist"}


def test_the_course_stays_importable_after_a_restart(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))
    course = tmp_path / "content" / "finetuning-course"
    pth = setup.add_course_to_path(course, tmp_path)
    assert pth == tmp_path / "finetuning-course.pth"
    assert pth.read_text() == f"{course}\n"  # site.addpackage reads one folder per line
    assert sys.path[0] == str(course)
    setup.add_course_to_path(course, tmp_path)
    assert sys.path.count(str(course)) == 1


def test_drive_keeps_runs_there(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("COURSE_RUNS_DIR", raising=False)
    mounted = []
    runs = tmp_path / "MyDrive" / "finetuning-course" / "runs"
    assert setup.runs_on_drive(False, True, mounted.append, str(runs)) is None
    assert not mounted and "COURSE_RUNS_DIR" not in os.environ
    assert setup.runs_on_drive(True, True, mounted.append, str(runs)) == str(runs)
    assert mounted == ["/content/drive"] and runs.is_dir() and os.environ["COURSE_RUNS_DIR"] == str(runs)
    monkeypatch.delenv("COURSE_RUNS_DIR")
    assert setup.runs_on_drive(True, False, mounted.append, str(runs)) is None
    assert "Colab only" in capsys.readouterr().out and len(mounted) == 1


def test_restart_says_why_and_kills_this_kernel(monkeypatch, capsys):
    monkeypatch.setattr(setup.time, "sleep", lambda seconds: None)
    killed = []
    setup.restart_session({"pyarrow": ("18.1.0", "26.0.1")}, kill=lambda pid, sig: killed.append((pid, sig)))
    assert killed == [(os.getpid(), signal.SIGKILL)]
    out = capsys.readouterr().out
    assert "pyarrow 18.1.0 -> 26.0.1" in out and "restarts now" in out and "from the top" in out


def test_summary():
    changed = {"pyarrow": ("18.1.0", "26.0.1"), "torchao": ("0.10.0", None), "trl": (None, "1.16.0")}
    assert setup.summary(changed, ["torch 2.11.0+cu128"]) == [
        "Installed: pyarrow 18.1.0 -> 26.0.1, trl 1.16.0", "Removed: torchao 0.10.0", "Kept: torch 2.11.0+cu128"]


# --------------------------------------------------------------------------------------------- main, pip faked
@pytest.fixture
def fake_colab(tmp_path, monkeypatch):
    """main() on a fake machine: `dists` is what is installed; pip calls change it and are recorded."""
    pins = setup.read_pins()
    dists = {setup.normalize(n): "0.0.1" for n in pins} | {"torch": "2.11.0+cu128", "pyarrow": "18.1.0",
                                                           "torchao": "0.10.0"}
    calls = []

    def pip(*args):
        calls.append(args)
        if args[0] == "install":
            dists.update({setup.normalize(r.split("==")[0]): r.split("==")[1] for r in args[1:] if "==" in r})
            dists["pyarrow"] = "26.0.1"  # datasets 5.2 needs pyarrow>=24
        else:
            dists.pop(args[-1])

    monkeypatch.setattr(setup, "pip", pip)
    monkeypatch.setattr(setup, "installed_version", lambda name: dists.get(setup.normalize(name)))
    monkeypatch.setattr(setup, "distributions", lambda: dict(dists))
    monkeypatch.setattr(setup, "add_course_to_path", lambda: tmp_path / "x.pth")
    monkeypatch.setattr(setup, "top_level_modules", lambda name: {name.replace("-", "_")})
    monkeypatch.setattr(setup, "restart_session", lambda stale: calls.append(("restart", stale)))
    monkeypatch.setenv("COURSE_RUNS_DIR", str(tmp_path / "runs"))
    # a fresh Colab kernel has not imported the course's libraries (earlier tests in this process may have)
    for name in pins:
        monkeypatch.delitem(sys.modules, name.replace("-", "_"), raising=False)
    return dists, calls, pins


def test_first_run_installs_removes_torchao_and_restarts(fake_colab, monkeypatch, capsys):
    dists, calls, pins = fake_colab
    monkeypatch.setitem(sys.modules, "pyarrow", sys.modules.get("pyarrow", object()))
    setup.main(["--drive=False"])
    install, uninstall, restart = calls
    assert install[0] == "install" and sorted(install[1:len(pins) + 1]) == sorted(f"{n}=={v}" for n, v in pins.items())
    assert uninstall == ("uninstall", "-y", "torchao")
    assert restart == ("restart", {"pyarrow": ("18.1.0", "26.0.1")})
    out = capsys.readouterr().out
    assert "Removed: torchao 0.10.0" in out and "Kept: torch 2.11.0+cu128" in out
    assert "Setup done" not in out  # the restart comes first; the rerun finishes the setup


def test_second_run_calls_no_pip(fake_colab, capsys):
    dists, calls, pins = fake_colab
    dists.update({setup.normalize(n): v for n, v in pins.items()})
    dists.pop("torchao")
    setup.main(["--drive=False"])
    assert calls == []
    out = capsys.readouterr().out
    assert "Setup done" in out and "KEEP_RUNS_ON_DRIVE = True" in out and "torch 2.11.0+cu128" in out


def test_no_restart_when_nothing_imported_changed(fake_colab, monkeypatch, capsys):
    dists, calls, pins = fake_colab
    monkeypatch.delitem(sys.modules, "pyarrow", raising=False)
    monkeypatch.delitem(sys.modules, "torchao", raising=False)
    monkeypatch.setattr(setup, "loaded_changes", lambda changed: {})
    setup.main(["--drive=False"])
    assert [c[0] for c in calls] == ["install", "uninstall"]
    assert "Setup done" in capsys.readouterr().out
