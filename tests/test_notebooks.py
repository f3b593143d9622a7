"""The headless notebook runner behind ``fseft-lab notebooks run``."""
import os

import nbformat
import pytest

from fseft_lab.notebooks import find_notebooks, run
from fseft_lab.profiles import MALLOC_ENV


def _notebook(folder, name, source):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, folder / name)


def test_kernel_gets_the_profile_and_malloc_settings_and_the_parent_env_is_restored(tmp_path, monkeypatch):
    for key in [*MALLOC_ENV, "FSEFT_PROFILE"]:
        monkeypatch.delenv(key, raising=False)
    _notebook(tmp_path, "00_env.ipynb", "import os\nprint([os.environ.get(k) for k in "
                                         f"{[*MALLOC_ENV, 'FSEFT_PROFILE', 'FSEFT_HEADLESS']!r}])")
    [(name, seconds)] = run(["00"], profile="gpu", out=tmp_path / "out", folder=tmp_path)
    nb = nbformat.read(tmp_path / "out" / "00_env.ipynb", as_version=4)
    assert nb.cells[0].outputs[0]["text"].strip() == str([*MALLOC_ENV.values(), "gpu", "1"])
    assert "papermill" not in nb.metadata and "papermill" not in nb.cells[0].metadata
    assert name == "00_env.ipynb" and seconds > 0
    assert all(key not in os.environ for key in [*MALLOC_ENV, "FSEFT_PROFILE"])


def test_a_failing_notebook_leaves_the_target_untouched(tmp_path):
    _notebook(tmp_path, "00_bad.ipynb", "raise ValueError('boom')")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "00_bad.ipynb").write_text("previous run")
    with pytest.raises(Exception, match="boom"):
        run(["00"], out=tmp_path / "out", folder=tmp_path)
    assert (tmp_path / "out" / "00_bad.ipynb").read_text() == "previous run"


def test_unknown_notebook_name_lists_the_course(tmp_path):
    _notebook(tmp_path, "00_env.ipynb", "1")
    with pytest.raises(ValueError, match="no notebook matches '07'.*00_env.ipynb"):
        find_notebooks(["07"], tmp_path)
