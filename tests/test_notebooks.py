"""The headless notebook runner behind ``fseft-lab notebooks run``, and the course files notebooks read."""
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import nbformat
import pytest

from fseft_lab.course_files import COURSE_FOLDERS, course_path
from fseft_lab.notebooks import NOT_EXECUTED_YET, find_notebooks, run, run_info_block, stamp_run_info, twin
from fseft_lab.profiles import MALLOC_ENV

REPO = Path(__file__).resolve().parent.parent


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


def test_run_stamps_the_title_cell_with_profile_machine_and_wall_time(tmp_path):
    title = f"# Title\n\n{run_info_block(NOT_EXECUTED_YET)}\n\nBody."
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(title), nbformat.v4.new_code_cell("1 + 1")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, tmp_path / "00_title.ipynb")
    [(_, seconds)] = run(["00"], profile="cpu", folder=tmp_path)
    source = nbformat.read(tmp_path / "00_title.ipynb", as_version=4).cells[0].source
    assert NOT_EXECUTED_YET not in source and source.startswith("# Title\n\n") and source.endswith("\n\nBody.")
    line = re.search(r"<!-- run-info -->(.*)<!-- /run-info -->", source).group(1)
    assert re.fullmatch(rf"\*Committed outputs: cpu profile, \S+ with \d+ CPU cores, .+, {seconds:.0f} s "
                        r"\(executed \d{4}-\d\d-\d\d with `fseft-lab notebooks run`\)\.\*", line), line


def test_stamping_a_notebook_without_markers_changes_nothing(tmp_path):
    _notebook(tmp_path, "00_plain.ipynb", "1")
    before = (tmp_path / "00_plain.ipynb").read_text()
    assert not stamp_run_info(tmp_path / "00_plain.ipynb", "*anything*")
    assert (tmp_path / "00_plain.ipynb").read_text() == before


def test_course_path_finds_committed_files_and_names_the_rule():
    assert course_path("results/benchmark_cpu.csv") == REPO / "results" / "benchmark_cpu.csv"
    with pytest.raises(ValueError, match="'fseft_lab/x.py' is not under a course folder"):
        course_path("fseft_lab/x.py")
    with pytest.raises(FileNotFoundError, match="no_such.csv"):
        course_path("results/no_such.csv")


@pytest.mark.slow
def test_the_wheel_carries_every_course_file(tmp_path):
    """A non-editable install (``pip install git+...`` on Colab) has no clone: its wheel must carry results/ and grids/."""
    leftover = not (REPO / "build").exists()  # setuptools builds in the clone's build/: remove it after, if it was not there
    try:
        subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path),
                        str(REPO)], check=True, cwd=tmp_path)
    finally:
        if leftover:
            shutil.rmtree(REPO / "build", ignore_errors=True)
    [wheel] = tmp_path.glob("fseft_lab-*.whl")
    packed = set(zipfile.ZipFile(wheel).namelist())
    committed = {f"fseft_lab/course_files/{p.relative_to(REPO).as_posix()}" for folder in COURSE_FOLDERS
                 for p in (REPO / folder).rglob("*") if p.is_file()}
    assert committed and committed <= packed, sorted(committed - packed)


def test_the_course_copy_holds_every_notebook_and_keeps_a_students_edits(tmp_path, capsys):
    from fseft_lab.cli import main

    assert main(["course", str(tmp_path / "course")]) == 0
    assert "11 notebook(s) copied" in capsys.readouterr().out
    copies = sorted((tmp_path / "course" / "notebooks").iterdir())
    assert [p.name for p in copies] == [p.name for p in find_notebooks()] and len(copies) == 11
    assert (tmp_path / "course" / "data").is_dir()
    first = nbformat.read(copies[2], as_version=4)
    committed = nbformat.read(find_notebooks(["02"])[0], as_version=4)
    assert "jupytext" not in first.metadata and "jupytext" in committed.metadata   # saving a copy writes no .py twin
    assert [c.get("outputs") for c in first.cells] == [c.get("outputs") for c in committed.cells]

    first.cells[0].source = "my notes"
    nbformat.write(first, copies[2])
    assert main(["course", str(tmp_path / "course")]) == 0
    assert "kept 11 already there" in capsys.readouterr().out
    assert nbformat.read(copies[2], as_version=4).cells[0].source == "my notes"
    assert main(["course", str(tmp_path / "course"), "--overwrite"]) == 0
    assert nbformat.read(copies[2], as_version=4).cells[0].source == committed.cells[0].source


@pytest.mark.parametrize("path", find_notebooks(), ids=lambda p: p.stem)
def test_a_notebook_reaches_outside_its_folder_only_for_its_data(path):
    """Copied alone (``fseft-lab course``, Colab, nbval's working copy in conftest.py), a notebook
    has only ``../data`` around it: course files come through ``course_path``."""
    outside = re.findall(r"""["'](\.\./[^"']*)["']""", twin(path).read_text())
    assert all(p == "../data" or p.startswith("../data/") for p in outside), outside


# A figure in a notebook's text: a decimal number, or a number with a unit of time, size, volume or share.
_FIGURE = re.compile(r"(?<![\w.])\d+\.\d+(?:e-?\d+)?(?![\w.])"
                     r"|(?<![\w.])\d+(?:\.\d+)?\s?(?:s|min|minutes|seconds|hours|GB|MB|ml|%)(?!\w)")


def quoted_figures(markdown: str) -> list[str]:
    """The figures a markdown cell states in its prose: code spans, formulas, link targets, arXiv
    ids and the run-info line (written by the runner, measured) are not prose."""
    for pattern in (r"<!-- run-info -->.*?<!-- /run-info -->", r"`[^`]*`", r"\$[^$]*\$", r"\]\([^)]*\)", r"arXiv:\S+"):
        markdown = re.sub(pattern, " ", markdown, flags=re.S)
    return _FIGURE.findall(markdown)


def test_quoted_figures_are_found_in_prose_only():
    assert quoted_figures("about 60 HU darker, 8 min, 0.41 vs `0.14` and $x = 1.5$") == ["8 min", "0.41"]


@pytest.mark.parametrize("path", find_notebooks(), ids=lambda p: p.stem)
def test_notebook_text_quotes_no_figure_its_cells_do_not_print(path):
    """Text and outputs once disagreed in a dozen places (hand-typed figures going stale when a
    model or a schedule changed): every figure the prose states must appear in a cell's source or
    output of the same notebook."""
    nb = nbformat.read(path, as_version=4)
    printed = " ".join(cell.source for cell in nb.cells if cell.cell_type == "code")
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            printed += " " + str(out.get("text", "")) + " ".join(str(v) for v in out.get("data", {}).values())
    stale = [(figure, cell.source[:60]) for cell in nb.cells if cell.cell_type == "markdown"
             for figure in quoted_figures(cell.source) if figure not in printed]
    assert not stale, f"{path.name}: text states figures no cell prints: {stale}"


@pytest.mark.parametrize("path", find_notebooks(), ids=lambda p: p.stem)
def test_committed_notebook_is_small_and_carries_no_widget_state(path):
    """The course convention (shared/docs/notebooks.md): a committed notebook stays well under 1 MB
    (notebook 00's CT figures once grew it to 1.2 MB) and holds no widget state blobs."""
    assert path.stat().st_size < 1_000_000, f"{path.name} is {path.stat().st_size / 1e6:.2f} MB; keep it under 1 MB"
    assert "widgets" not in nbformat.read(path, as_version=4).metadata, f"{path.name} carries widget state"


def test_a_notebook_run_headless_shows_its_progress_as_plain_text_on_stdout(monkeypatch, capsys):
    """nbval and papermill keep stdout: a widget bar there would leave nothing a reader sees."""
    import fseft_lab.progress as progress

    monkeypatch.setattr(progress, "in_notebook_kernel", lambda: True)
    monkeypatch.setenv("FSEFT_HEADLESS", "1")
    for _ in progress.progress_bar(range(3), desc="adapting"):
        pass
    out, err = capsys.readouterr()
    assert "adapting: 100%|" in out and "3/3" in out and err == ""

    monkeypatch.delenv("FSEFT_HEADLESS")   # a student's JupyterLab: tqdm's widget (here: its text bar on stderr)
    monkeypatch.setattr(progress, "in_notebook_kernel", lambda: False)
    for _ in progress.progress_bar(range(3), desc="adapting"):
        pass
    out, err = capsys.readouterr()
    assert out == "" and "adapting: 100%" in err
