"""Colab's environment rebuilt on this machine: every notebook's setup cell in a kernel that holds Colab's versions.

Once per test session this builds a virtualenv with Colab's version (../shared/colab/pip-freeze.gpu.txt) of every
package the course's .venv shares with Colab, plus torch 2.13.0 (the local CPU build: Colab's CUDA build cannot run
here), Colab's torchao 0.10.0, the offline model packages and a stand-in `google.colab` package. Then, for each
notebook, in a fresh kernel of that venv whose working folder holds a copy of the course (as /content does on Colab):
the imports Colab's kernel makes at start, the notebook's setup cell, and its cells up to the first model load.

The session's first setup must install, say that and why the session restarts, and end the kernel (as on Colab,
where datasets needs a newer pyarrow than the one loaded at start). In the restarted kernel the setup must install
nothing and take about a second. The Python is 3.11, not Colab's 3.13: Colab-like, not Colab.
"""

import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import nbformat
import pytest
from jupyter_client import AsyncKernelManager
from jupyter_client.kernelspec import KernelSpecManager
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, DeadKernelError
from packaging.requirements import Requirement

pytestmark = pytest.mark.colab

ROOT = Path(__file__).resolve().parents[1]
COLAB = ROOT.parent / "shared" / "colab"
FREEZE = COLAB / "pip-freeze.gpu.txt"
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")) + [ROOT / "homework/solution/dpo_orpo_solution.ipynb"]
# TODO: drop the fallback once helpers/profiles.py has l4-sim everywhere (the small CPU profile with L4 settings)
PROFILE = "l4-sim" if '"l4-sim"' in (ROOT / "helpers/profiles.py").read_text() else "cpu"
NOT_INSTALLED = {  # names the closure of Colab's packages would pull in, and why this venv does without them
    "notebook": "Jupyter's server (widgetsnbextension 3 asks for it); a kernel does not need it",
}
# What Colab's kernel has imported before the first cell runs: google.colab imports pandas, pandas imports pyarrow.
PRELOAD = "import google.colab, numpy, pandas, pyarrow, psutil, matplotlib, matplotlib.pyplot"
AFTER_SETUP = """
import importlib.metadata, sys
from peft.import_utils import is_torchao_available
is_torchao_available()  # raises ImportError when an old torchao sits next to peft
for name in ("numpy", "pandas", "pyarrow", "psutil", "matplotlib"):
    loaded, on_disk = sys.modules[name].__version__, importlib.metadata.version(name)
    assert loaded == on_disk, f"{name} {loaded} in memory but {on_disk} on disk"
print("consistent:", {name: sys.modules[name].__version__ for name in ("pandas", "pyarrow", "matplotlib")})
"""


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def colab_versions() -> dict[str, str]:
    """normalized name -> version of every `name==version` line of Colab's pip freeze."""
    versions = {}
    for line in FREEZE.read_text().splitlines():
        match = re.match(r"([A-Za-z0-9_.\-]+)==(\S+)$", line.strip())
        if match:
            versions[normalize(match[1])] = match[2]
    return versions


# --------------------------------------------------------------------------------------------- the venv
def pip_install(venv: Path, requirements: list[str], notes: list[str]) -> None:
    """pip install --no-deps into venv (the course's pip drives it); drop, with a note, what this Python lacks."""
    requirements = list(requirements)
    while requirements:
        result = subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install",
                                 "--no-deps", "--no-compile", "--progress-bar", "off", "-q", *requirements],
                                capture_output=True, text=True)
        if result.returncode == 0:
            return
        missing = re.search(r"No matching distribution found for (\S+)", result.stdout + result.stderr)
        if not missing or missing[1] not in requirements:
            raise RuntimeError(f"pip failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
        notes.append(f"{missing[1]}: no build for Python {sys.version_info.major}.{sys.version_info.minor} here")
        requirements.remove(missing[1])


def missing_requirements(site_packages: Path) -> set[str]:
    """Names that the venv's distributions require (extras they ask for included) and that it does not have."""
    dists = {normalize(d.metadata["Name"]): d for d in importlib.metadata.distributions(path=[str(site_packages)])}
    missing = set()

    def need(requirement: Requirement, extra: str) -> None:
        if requirement.marker and not requirement.marker.evaluate({"extra": extra}):
            return
        name = normalize(requirement.name)
        if name not in dists:
            missing.add(name)
            return
        for wanted in requirement.extras:  # e.g. datasets needs fsspec[http], which needs aiohttp
            for sub in dists[name].requires or []:
                sub = Requirement(sub)
                if sub.marker and sub.marker.evaluate({"extra": wanted}) and not sub.marker.evaluate({"extra": ""}):
                    need(sub, wanted)

    for dist in dists.values():
        for requirement in dist.requires or []:
            need(Requirement(requirement), "")
    return missing


def build_colab_venv(venv: Path) -> list[str]:
    """The Colab-like venv (see the module docstring). Returns notes on what it left out."""
    colab, notes = colab_versions(), []
    course = {normalize(d.metadata["Name"]) for d in importlib.metadata.distributions()}
    torch = importlib.metadata.version("torch").split("+")[0]
    shared = [f"{name}=={colab[name]}" for name in sorted(course & colab.keys()) if name != "torch"]
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    pip_install(venv, [*shared, f"torch=={torch}", f"torchao=={colab['torchao']}"], notes)
    site_packages = Path(subprocess.check_output(
        [str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        text=True).strip())
    for _ in range(10):  # what those need and the course's venv lacks: Colab's versions of them too
        missing = missing_requirements(site_packages) - NOT_INSTALLED.keys() - {"torch"}
        notes += [f"{name}: required by a Colab package but not in Colab's freeze either" for name in missing
                  if name not in colab and not any(name in note for note in notes)]
        missing = sorted(f"{name}=={colab[name]}" for name in missing if name in colab)
        if not missing:
            break
        pip_install(venv, missing, notes)
    notes += [f"{name}: {why}" for name, why in NOT_INSTALLED.items()]
    pip_install(venv, ["-r", str(ROOT / "requirements-offline.txt")], notes)
    colab_package = site_packages / "google" / "colab"  # a real package: accelerate, transformers, tqdm probe its spec
    colab_package.mkdir(parents=True)
    (colab_package / "__init__.py").write_text('"""Stand-in for Colab\'s google.colab (tests/test_colab_env.py)."""\n')
    return notes


def copy_course(target: Path) -> None:
    """The course's files as a clone has them (tracked and new files; nothing ignored: no .venv, no runs/)."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=ROOT,
                            capture_output=True, text=True)
    if listed.returncode != 0:
        shutil.copytree(ROOT, target, ignore=shutil.ignore_patterns(".git", ".venv*", "runs", "__pycache__"))
        return
    for name in filter(None, listed.stdout.split("\0")):
        if (ROOT / name).is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, target / name)


# --------------------------------------------------------------------------------------------- kernels
class Kernel:
    """One kernel of the venv, as Colab starts it: cwd /content (here: content/), the venv's bin first on PATH."""

    def __init__(self, colab):
        self.nb = nbformat.v4.new_notebook()
        # async: a blocking client would wait for the reply of a cell whose kernel died and never notice
        self.km = AsyncKernelManager(kernel_name="colab", kernel_spec_manager=KernelSpecManager(
            kernel_dirs=[str(colab.kernels)]))
        self.client = NotebookClient(self.nb, km=self.km, timeout=900, allow_errors=False, shutdown_kernel="immediate")

    def run(self, source: str) -> tuple[str, float]:
        """Run one cell; returns its output text and seconds. Raises CellExecutionError, or DeadKernelError."""
        cell = nbformat.v4.new_code_cell(source)
        self.nb.cells.append(cell)
        self.last = cell
        start = time.time()
        self.client.execute_cell(cell, len(self.nb.cells) - 1)
        return output_text(cell), time.time() - start

    def last_output(self) -> str:
        return output_text(self.last)


def output_text(cell) -> str:
    parts = []
    for output in cell.outputs:
        if output.output_type == "stream":
            parts.append(output.text)
        elif output.output_type == "error":
            parts.append("\n".join(output.traceback))
        elif "data" in output:
            parts.append(output.data.get("text/plain", ""))
    return re.sub(r"\x1b\[[0-9;]*m", "", "".join(parts))


class Colab:
    def __init__(self, base: Path, venv: Path):
        self.venv, self.content, self.kernels, self.runs = venv, base / "content", base / "kernels", base / "runs"
        self.installed = False  # the session's first setup installs (and restarts); the later ones find it done
        (self.kernels / "colab").mkdir(parents=True)
        (self.kernels / "colab" / "kernel.json").write_text(json.dumps({
            "argv": [str(venv / "bin" / "python"), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "Colab-like", "language": "python"}))
        # Colab writes .pyc files (this venv is installed --no-compile: the first kernel compiles what it imports)
        dropped = ("VIRTUAL_ENV", "PYTHONPATH", "MPLBACKEND", "PYTHONDONTWRITEBYTECODE")
        self.env = {k: v for k, v in os.environ.items() if k not in dropped}
        self.env.update(PATH=f"{venv}/bin:{os.environ['PATH']}", COURSE_RUNS_DIR=str(self.runs), HF_HUB_OFFLINE="1",
                        COURSE_WANDB="off", WANDB_MODE="offline", COURSE_PROFILE=PROFILE,
                        PYDEVD_DISABLE_FILE_VALIDATION="1")

    @contextmanager
    def kernel(self):
        kernel = Kernel(self)
        with kernel.client.setup_kernel(env=self.env, cwd=str(self.content), cleanup_kc=True):
            yield kernel


@pytest.fixture(scope="session")
def colab(tmp_path_factory):
    if not FREEZE.exists():
        pytest.skip(f"no Colab package list at {FREEZE} (the shared/colab folder next to the repository)")
    base = tmp_path_factory.mktemp("colab")
    start = time.time()
    notes = build_colab_venv(base / "venv")
    print(f"\nColab-like venv built in {time.time() - start:.0f} s; left out: {'; '.join(notes) or 'nothing'}")
    (base / "content" / "finetuning-course").mkdir(parents=True)
    copy_course(base / "content" / "finetuning-course")
    yield Colab(base, base / "venv")
    shutil.rmtree(base / "venv", ignore_errors=True)  # 2 GB; pytest keeps the last three temporary folders


# --------------------------------------------------------------------------------------------- the notebooks
def cells_to_run(path: Path) -> list[str]:
    """Code cells after the setup, up to and including the first that loads a model (02 and 03: up to their first
    get_peft_model too). A cell reading another notebook's records (09) ends it early: a fresh runs/ has none."""
    cells = [c.source for c in nbformat.read(path, as_version=4).cells[2:] if c.cell_type == "code"]
    loads = [i for i, source in enumerate(cells) if "from_pretrained(" in source or "SentenceTransformer(" in source]
    last = loads[0]
    if path.name.startswith(("02_", "03_")):
        last = max(last, next(i for i, source in enumerate(cells) if "get_peft_model" in source))
    reads = [i for i, source in enumerate(cells[:last + 1]) if "helpers.read_run(" in source]
    return cells[:reads[0]] if reads else cells[:last + 1]


def setup_cell(path: Path) -> str:
    return nbformat.read(path, as_version=4).cells[1].source


def test_cells_to_run_stop_at_the_first_model():
    for path in NOTEBOOKS:
        cells = cells_to_run(path)
        assert cells, path.name
        if not path.name.startswith("09_"):
            assert "from_pretrained(" in "".join(cells) or "SentenceTransformer(" in "".join(cells), path.name


def first_setup(colab: Colab, setup: str) -> None:
    """Colab's first run: the setup installs, says the session restarts and why, and ends the kernel."""
    with colab.kernel() as kernel:
        kernel.run(PRELOAD)
        start = time.time()
        with pytest.raises(DeadKernelError):  # the setup ends its kernel on purpose; Colab then restarts it
            kernel.run(setup)
        output = kernel.last_output()
    print(f"\nfirst setup: {time.time() - start:.0f} s\n{output}")
    assert "Successfully installed" in output, output  # the line Colab offers its restart button on
    assert "restarts now" in output and "Run all" in output, output
    colab_version = colab_versions()
    assert f"pyarrow {colab_version['pyarrow']} -> " in output, "pyarrow, loaded at start, is a reason to restart"
    assert f"Removed: torchao {colab_version['torchao']}" in output, output
    assert f"Kept: torch {importlib.metadata.version('torch')}" in output, output  # torch stays


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_on_colab(colab, path):
    setup = setup_cell(path)
    assert "colab_setup.py" in setup
    if not colab.installed:
        colab.installed = True  # whatever happens here, the next notebooks find the install done
        first_setup(colab, setup)
    with colab.kernel() as kernel:
        kernel.run(PRELOAD)
        output, seconds = kernel.run(setup)
        assert "Installing" not in output and "Removing" not in output and "restarts" not in output, output
        assert "Setup done" in output and "KEEP_RUNS_ON_DRIVE" in output, output
        assert seconds < 5, f"the setup with nothing to do took {seconds:.1f} s:\n{output}"
        print(f"\n{path.stem}: setup cell {seconds:.1f} s\n{output.strip()}")
        kernel.run(AFTER_SETUP)
        for source in cells_to_run(path):
            try:
                kernel.run(source)
            except CellExecutionError as error:
                pytest.fail(f"{path.name}: cell failed on Colab's versions:\n{source[:300]}\n{error}")
