"""scripts/refresh_outputs.py: what an executed run leaves in a cell, and what of it a committed notebook keeps."""
import sys
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import refresh_outputs  # noqa: E402


def _notebooks(tmp_path):
    root = tmp_path / "repo"
    cells = [new_markdown_cell("# title"), new_code_cell("print('hi')"), new_code_cell("train()"),
             new_code_cell("plot()"), new_code_cell("x = 1"), new_code_cell("changed()")]
    for i, cell in enumerate(cells):
        cell.id = f"c{i}"
    source = new_notebook(cells=cells)
    executed = nbformat.from_dict(nbformat.v4.new_notebook(cells=[nbformat.from_dict(dict(c)) for c in cells]))
    executed.metadata["widgets"] = {"state": {}}
    hi, train, plot, quiet, changed = executed.cells[1:]
    hi.outputs = [new_output("stream", name="stdout", text="hi\n"),
                  new_output("stream", name="stderr", text="a warning\n"),
                  new_output("stream", name="stdout", text=f"saved to {root}/runs/x.json\n")]
    train.outputs = [new_output("display_data", data={"text/html": "<progress value='3'></progress>",
                                                      "text/plain": "<IPython.core.display.HTML object>"}),
                     new_output("display_data", data={  # the Trainer's live display at its end: bar and loss table
                         "text/html": "<div><progress value='2' max='2'></progress> [2/2 00:01]</div>"
                                      "<table><tr><td>0.75</td></tr></table>",
                         "text/plain": "<IPython.core.display.HTML object>"}),
                     new_output("display_data", data={refresh_outputs.WIDGET: {"model_id": "abc"},
                                                      "text/plain": "HBox()"}),
                     new_output("stream", name="stdout", text="step 1\rstep 2\rstep 3\ndone\r\n"),
                     new_output("stream", name="stdout", text="wandb: run saved in /home/ana/wandb\n"),
                     new_output("execute_result", data={"text/plain": "started 2026-12-05 21:07:13"},
                                execution_count=3)]
    plot.outputs = [new_output("display_data", data={"image/png": "iVBORw0KGgo/tmp/Q=", "text/plain": "<Figure>"})]
    changed.source = "changed(old=True)"  # the committed cell was edited after the run
    changed.outputs = [new_output("stream", name="stdout", text="old output\n")]
    for n, cell in enumerate(executed.cells[1:], start=1):
        cell.execution_count = n
        cell.metadata["execution"] = {"iopub.status.busy": "2026-12-05T21:07:13.000Z"}
    paths = tmp_path / "source.ipynb", tmp_path / "executed.ipynb"
    nbformat.write(source, paths[0])
    nbformat.write(executed, paths[1])
    return root, *paths


def test_refresh_keeps_what_a_reader_needs_and_nothing_machine_specific(tmp_path):
    root, source, executed = _notebooks(tmp_path)
    report = refresh_outputs.refresh(source, executed, root=root)
    nb = nbformat.read(source, as_version=4)
    hi, train, plot, quiet, changed = nb.cells[1:]
    # stderr dropped, stdout merged into one block, the repository's own path made relative
    assert [o.output_type for o in hi.outputs] == ["stream"]
    assert hi.outputs[0].text == "hi\nsaved to runs/x.json\n"
    # progress bars and widgets gone, carriage returns resolved, machine paths and timestamps dropped and reported
    assert [(o.output_type, o.get("text")) for o in train.outputs] == [("display_data", None),
                                                                       ("stream", "step 3\ndone\n")]
    assert train.outputs[0].data["text/html"] == "<table><tr><td>0.75</td></tr></table>"  # the losses, not the bar
    assert len(report["dropped"]) == 2 and "wandb: run saved in /home/ana/wandb" in report["dropped"][0]
    assert "execute_result with '2026-12-05 21:07'" in report["dropped"][1]
    assert plot.outputs[0].data["image/png"] == "iVBORw0KGgo/tmp/Q="  # base64 that looks like a path is no path
    # a cell that ran without output keeps its execution count (nbval would skip it otherwise)
    assert quiet.outputs == [] and quiet.execution_count == 4
    # a cell edited since the run gets no stale output and is reported
    assert changed.outputs == [] and changed.execution_count is None and report["stale"] == ["c5"]
    assert report["copied"] == 3
    assert "widgets" not in nb.metadata and all("execution" not in c.metadata for c in nb.cells)


def test_refresh_is_idempotent(tmp_path):
    root, source, executed = _notebooks(tmp_path)
    refresh_outputs.refresh(source, executed, root=root)
    once = source.read_text()
    refresh_outputs.refresh(source, executed, root=root)
    assert source.read_text() == once


def test_refresh_refuses_a_run_that_stopped_at_an_error(tmp_path):
    root, source, executed = _notebooks(tmp_path)
    done = nbformat.read(executed, as_version=4)
    done.cells[3].outputs = [new_output("error", ename="RuntimeError", evalue="boom", traceback=["boom"])]
    done.cells[4].execution_count = None  # never ran
    nbformat.write(done, executed)
    before = source.read_text()
    with pytest.raises(ValueError, match="did not run to the end \\(cell c3 failed or never ran\\)"):
        refresh_outputs.refresh(source, executed, root=root)
    assert source.read_text() == before
