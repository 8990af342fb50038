"""The repository the course is published from is one setting (pyproject [tool.course]): every Colab badge and
clone URL names exactly it, each badge opens its own notebook, and scripts/set_repository.py rewrites them all."""
import importlib.util
import json
import re
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("set_repository", ROOT / "scripts" / "set_repository.py")
set_repository = importlib.util.module_from_spec(spec)
spec.loader.exec_module(set_repository)

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb")) + sorted((ROOT / "homework").rglob("*.ipynb"))
BADGE = re.compile(r"https://colab\.research\.google\.com/github/([^/\s\"')]+/[^/\s\"')]+)/blob/([^/\s\"')]+)/"
                   r"([^\s\"')]+\.ipynb)")
CLONE = re.compile(r"git clone [^\n\"\\]*?https://github\.com/([^/\s\"\\]+/[^/\s\"\\]+?)(?:\.git)?( finetuning-course)?"
                   r"(?=[\s\"\\]|$)")


def repository() -> str:
    return set_repository.current_repository(ROOT)


def badge_target(notebook: Path) -> str:
    """The file a notebook's badge opens: itself; for the teacher's solution, the student notebook made from it
    (scripts/make_homework.py copies the badge cell)."""
    relative = notebook.relative_to(ROOT)
    if relative.parts[:2] == ("homework", "solution"):
        return f"homework/{notebook.stem.removesuffix('_solution')}.ipynb"
    return relative.as_posix()


def test_the_setting():
    assert re.fullmatch(r"[A-Za-z0-9-]+/[A-Za-z0-9._-]+", repository())


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_badge_and_clone_name_the_repository(path):
    nb = json.loads(path.read_text())
    first = "".join(nb["cells"][0]["source"])
    badges = BADGE.findall(path.read_text())
    assert BADGE.search(first), "the first cell needs an Open-in-Colab badge"
    for repo, branch, target in badges:
        assert repo == repository(), f"badge names {repo}, pyproject says {repository()}"
        assert branch == "main"
        assert target == badge_target(path), f"badge opens {target}, not this notebook"
    setup = "".join(nb["cells"][1]["source"])
    clones = CLONE.findall(setup)
    assert len(clones) == 1, "the setup cell clones the course once"
    repo, folder = clones[0]
    assert repo == repository(), f"the setup clones {repo}, pyproject says {repository()}"
    # the setup cell then runs finetuning-course/scripts/colab_setup.py: the clone must land there
    assert repo.split("/")[1] == "finetuning-course" or folder, "the clone must land in finetuning-course/"
    assert "finetuning-course/scripts/colab_setup.py" in setup


def test_readme_badges_name_the_repository_and_real_notebooks():
    badges = BADGE.findall((ROOT / "README.md").read_text())
    assert len(badges) >= len(list((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")))
    for repo, branch, target in badges:
        assert repo == repository() and branch == "main"
        assert (ROOT / target).is_file(), f"README badge opens {target}, which does not exist"
    assert not re.search(r"github\.com/(?!" + re.escape(repository()) + r")[\w.-]+/finetuning-course",
                         (ROOT / "README.md").read_text())


def test_set_repository_rewrites_only_the_urls(tmp_path):
    copy = tmp_path / "course"
    for name in ("notebooks", "homework"):
        shutil.copytree(ROOT / name, copy / name)
    for name in ("README.md", "pyproject.toml"):
        shutil.copy2(ROOT / name, copy / name)
    before = {p: p.read_bytes() for p in copy.rglob("*") if p.is_file()}

    set_repository.main(["alice/llm-course", "--root", str(copy)])
    assert set_repository.current_repository(copy) == "alice/llm-course"
    for path, old in before.items():
        new = path.read_bytes()
        if path.suffix == ".ipynb":
            json.loads(new)  # still a notebook
            assert BADGE.search(new.decode()) and all(repo == "alice/llm-course"
                                                      for repo, _, _ in BADGE.findall(new.decode()))
            clones = CLONE.findall(new.decode())
            assert clones == [("alice/llm-course", " finetuning-course")], clones  # still lands in finetuning-course/
        old_lines, new_lines = old.decode().splitlines(), new.decode().splitlines()
        assert len(old_lines) == len(new_lines)
        for a, b in zip(old_lines, new_lines):
            if a != b:
                assert "alice/llm-course" in b and repository() in a, f"{path.name}: unexpected change {b!r}"

    set_repository.main([repository(), "--root", str(copy)])
    assert all(path.read_bytes() == old for path, old in before.items()), "setting it back restores every file"


def test_set_repository_refuses_a_bad_name(tmp_path):
    with pytest.raises(SystemExit):
        set_repository.set_repository("not a repo", ROOT)


@pytest.mark.slow  # a subprocess that imports torch
def test_helpers_is_installed_so_nothing_edits_sys_path(tmp_path):
    """make install runs `pip install -e .`: `import helpers` works from any folder (a notebook's, a script's, this
    one), and the scripts no longer put the repository on sys.path themselves."""
    import subprocess
    import sys

    found = subprocess.run([sys.executable, "-c", "import helpers; print(helpers.__file__)"], cwd=tmp_path,
                           capture_output=True, text=True)
    assert found.returncode == 0, "helpers is not installed: run `make install` (or `pip install -e .`)"
    assert Path(found.stdout.strip()).resolve().parent == (ROOT / "helpers").resolve(), found.stdout
    for script in (ROOT / "scripts").glob("*.py"):
        if script.name != "colab_setup.py":  # on Colab the clone goes on sys.path (see pyproject.toml)
            assert "sys.path.insert" not in script.read_text(), script.name
    for notebook in [*ROOT.glob("notebooks/*.ipynb"), *ROOT.glob("homework/**/*.ipynb"), *ROOT.glob("teacher/*.ipynb")]:
        assert "sys.path" not in notebook.read_text(), notebook.name
