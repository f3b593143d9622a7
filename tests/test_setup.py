"""The README's set-up: what its install command brings is what the course and CI need."""
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _quick_start() -> str:
    readme = (ROOT / "README.md").read_text()
    return readme[readme.index("## Quick start"):readme.index("## The course")]


def _extras(text: str) -> set[str]:
    """Extras of the package's own editable install in a shell text: `pip install -e ".[lab,dev]"`."""
    found = re.findall(r"pip install[^\n]*-e \"?\.\[([a-z,]+)\]", text)
    assert found, f"no `pip install -e .[...]` in {text[:200]!r}"
    return set(found[0].split(","))


def test_the_readme_install_brings_jupyterlab_and_says_how_to_open_the_course():
    quick = _quick_start()
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    installed = [req for extra in _extras(quick) for req in extras[extra]]
    assert any(req.startswith("jupyterlab") for req in installed), installed
    # in a working copy: running the course never modifies the clone's notebooks (test_notebooks.py tests the copy)
    copy = re.search(r"^fseft-lab course (\S+) && jupyter lab (\S+)$", quick, re.M)
    assert copy and copy[1] == copy[2], "the Quick start opens JupyterLab in the course's working copy"
    assert "jupyter lab notebooks/" not in quick


def test_the_readme_sends_cpu_only_linux_to_pytorchs_cpu_index():
    quick = _quick_start()
    assert "--index-url https://download.pytorch.org/whl/cpu" in quick
    assert all(word in quick for word in ("NVIDIA GPU", "macOS", "Colab", "Binder"))


def test_students_get_the_course_without_the_test_tools_and_ci_gets_both():
    student, ci = _extras(_quick_start()), _extras((ROOT / ".ci" / "run").read_text())
    assert "dev" not in student, "peft brings transformers, accelerate and more that no student needs"
    assert student <= ci and "dev" in ci


def test_ci_builds_its_environment_apart_from_the_users():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "rm -rf .venv" not in ci and re.search(r"venv \.ci/venv", ci)


def test_the_quick_start_makes_the_fast_kernel_the_environments_default():
    from fseft_lab.profiles import MALLOC_ENV

    quick = _quick_start()
    assert "ipykernel install --sys-prefix --name python3" in quick   # this environment's default kernel only
    assert all(f"--env {name} {value}" in quick for name, value in MALLOC_ENV.items())
