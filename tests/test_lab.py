"""`make lab` opens the course in JupyterLab with the kernel every notebook names, running this environment's Python
(issue 20). A user-wide kernel of the same name pointing at another Python would shadow it: checked here."""
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
from jupyter_client.kernelspec import KernelSpecManager

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = [*sorted((ROOT / "notebooks").glob("*.ipynb")), *sorted((ROOT / "homework").rglob("*.ipynb"))]


def same_python(executable: str) -> bool:
    """Is `executable` this environment's Python? (`python3` on the PATH counts when it resolves to it.)"""
    found = executable if os.path.isabs(executable) else subprocess.run(
        ["which", executable], capture_output=True, text=True).stdout.strip()
    return bool(found) and Path(found).resolve() == Path(sys.executable).resolve()


def test_every_notebook_names_a_kernel_of_this_environment():
    assert NOTEBOOKS
    manager = KernelSpecManager()
    for path in NOTEBOOKS:
        name = nbformat.read(path, as_version=4).metadata["kernelspec"]["name"]
        spec = manager.get_kernel_spec(name)  # raises NoSuchKernel if nothing provides it
        assert same_python(spec.argv[0]), (
            f"{path.name} runs in kernel '{name}', which starts {spec.argv[0]}, not this environment's "
            f"{sys.executable}: run `make install` (it registers the venv's kernel), or remove the stale one shown "
            f"by `jupyter kernelspec list`")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_make_lab_serves_the_course_with_that_kernel(tmp_path):
    """The Makefile's own recipe (with this environment's bin/ in place of .venv/bin): JupyterLab starts, serves its
    page, lists the notebooks, and its kernel 'python3' is this environment's Python."""
    port, token = free_port(), "course-test"
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path)}
    args = f"--no-browser --ip=127.0.0.1 --port={port} --IdentityProvider.token={token}"
    if os.geteuid() == 0:  # CI containers run as root, which JupyterLab refuses without this flag
        args += " --allow-root"
    lab = subprocess.Popen(
        ["make", "-s", "lab", "STAMP=", f"BIN={bin_dir}", f"LAB_ARGS={args}"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        def get(path):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}?token={token}", timeout=5) as response:
                return response.status, response.read().decode()

        deadline = time.time() + 60
        while True:
            try:
                status, page = get("/lab")
                break
            except OSError:
                assert lab.poll() is None, lab.stdout.read().decode()[-2000:]
                assert time.time() < deadline, "JupyterLab did not answer within 60 s"
                time.sleep(0.5)
        assert status == 200 and "JupyterLab" in page
        _, listing = get("/api/contents/notebooks")
        assert "01_pretraining_vs_sft.ipynb" in {item["name"] for item in json.loads(listing)["content"]}
        _, specs = get("/api/kernelspecs")
        python3 = json.loads(specs)["kernelspecs"]["python3"]["spec"]
        assert same_python(python3["argv"][0]), python3["argv"]
    finally:
        if lab.poll() is None:
            os.killpg(lab.pid, 15)
            lab.wait(timeout=30)
