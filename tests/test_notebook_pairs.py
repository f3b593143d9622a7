"""Each course notebook has one source: a jupytext pair, ``notebooks/NN_x.ipynb`` (with the committed
outputs) and ``notebooks/NN_x.py`` (the same cells as percent-format text), kept in step
(CONTRIBUTING.md). Fast: nothing here executes a course notebook."""
import re
import shutil
from pathlib import Path

import nbformat
import pytest

from fseft_lab.notebooks import NOT_EXECUTED_YET, NOTEBOOK_DIR, find_notebooks, pair_differences, run, run_info_block, twin, write_twin

REPO = Path(__file__).resolve().parent.parent


def assert_pair_in_step(notebook: Path) -> None:
    """The notebook has a .py twin whose cells (type, source, tags) are the notebook's."""
    assert twin(notebook).exists(), (f"{notebook.name} has no jupytext twin {twin(notebook).name}: run "
                                     f"`jupytext --set-formats ipynb,py:percent {notebook}` (CONTRIBUTING.md)")
    differences = pair_differences(notebook, twin(notebook))
    assert not differences, ("notebook and .py out of step; after editing one side run "
                             f"`jupytext --sync {notebook}` (CONTRIBUTING.md):\n" + "\n".join(differences))


@pytest.mark.parametrize("path", find_notebooks(), ids=lambda p: p.stem)
def test_notebook_and_its_py_twin_are_in_step(path):
    assert_pair_in_step(path)


def test_every_py_in_notebooks_is_a_notebook_twin():
    orphans = [p.name for p in NOTEBOOK_DIR.glob("*.py") if not p.with_suffix(".ipynb").exists()]
    assert not orphans, f"notebooks/ holds .py files without a notebook: {orphans}"


def test_the_twins_carry_the_parameters_tag_and_the_nbval_markers():
    """Papermill finds the parameters cell by its tag and nbval checks the cells marked in their source:
    both must survive an edit made on the .py side."""
    for path in find_notebooks():
        text = twin(path).read_text()
        assert '# %% tags=["parameters"]' in text, twin(path).name
        assert text.count("# NBVAL_CHECK_OUTPUT") == path.read_text().count("# NBVAL_CHECK_OUTPUT"), twin(path).name


def _copy_pair(name: str, folder: Path) -> Path:
    shutil.copy(NOTEBOOK_DIR / f"{name}.ipynb", folder)
    shutil.copy(NOTEBOOK_DIR / f"{name}.py", folder)
    return folder / f"{name}.ipynb"


@pytest.mark.parametrize("edit, what", [
    (lambda text: text.replace("# %% tags=[\"parameters\"]", "# %%", 1), "tags"),
    (lambda text: text.replace("\nseed = 0", "\nseed = 1", 1), "source"),
    (lambda text: text + "\n# %%\nprint('a cell only the .py has')\n", "cells"),
], ids=["tag removed", "source edited", "cell added"])
def test_an_edited_twin_is_reported_out_of_step(tmp_path, edit, what):
    notebook = _copy_pair(find_notebooks(["05"])[0].stem, tmp_path)
    assert_pair_in_step(notebook)  # the unaltered copy passes
    text = twin(notebook).read_text()
    twin(notebook).write_text(edit(text))
    assert twin(notebook).read_text() != text
    with pytest.raises(AssertionError, match=rf"out of step.*\n\s*05_lora.ipynb vs 05_lora.py: .*{what}"):
        assert_pair_in_step(notebook)


def test_a_notebook_without_twin_is_reported(tmp_path):
    notebook = tmp_path / "00_alone.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1")]), notebook)
    with pytest.raises(AssertionError, match="has no jupytext twin 00_alone.py"):
        assert_pair_in_step(notebook)


def _paired_notebook(folder: Path) -> Path:
    title = f"# Title\n\n{run_info_block(NOT_EXECUTED_YET)}\n\nBody."
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(title),
                                         nbformat.v4.new_code_cell("seed = 0", metadata={"tags": ["parameters"]}),
                                         nbformat.v4.new_code_cell("print(seed + 1)")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["jupytext"] = {"formats": "ipynb,py:percent"}
    nbformat.write(nb, folder / "00_pair.ipynb")
    write_twin(folder / "00_pair.ipynb")
    return folder / "00_pair.ipynb"


def test_running_a_notebook_in_place_rewrites_its_twin_with_the_stamped_title(tmp_path):
    notebook = _paired_notebook(tmp_path)
    run(["00"], profile="cpu", folder=tmp_path)
    assert NOT_EXECUTED_YET not in twin(notebook).read_text()
    assert re.search(r"<!-- run-info -->\*Committed outputs: cpu profile, .*<!-- /run-info -->", twin(notebook).read_text())
    assert_pair_in_step(notebook)
    assert nbformat.read(notebook, as_version=4).cells[2].outputs[0]["text"] == "1\n"


def test_running_refuses_a_pair_out_of_step_before_executing(tmp_path):
    notebook = _paired_notebook(tmp_path)
    twin(notebook).write_text(twin(notebook).read_text().replace("print(seed + 1)", "print(seed + 2)"))
    before = notebook.read_text()
    with pytest.raises(ValueError, match=r"out of step; run `jupytext --sync`.*\n\s*00_pair.ipynb vs 00_pair.py: cell 2"):
        run(["00"], profile="cpu", folder=tmp_path)
    assert notebook.read_text() == before


def test_title_cells_link_only_to_entries_of_the_references_page():
    """The title cells' citations are typed by hand (no builder any more); their links must still
    name anchors that docs/references.md (tools/build_references.py) defines."""
    anchors = set(re.findall(r'<a id="([^"]+)"></a>', (REPO / "docs" / "references.md").read_text()))
    for path in find_notebooks():
        title = nbformat.read(path, as_version=4).cells[0].source
        linked = set(re.findall(r"docs/references\.md#([\w-]+)", title))
        assert "paper" in linked and linked <= anchors, (path.name, sorted(linked - anchors))
