"""Build hook: the installed package carries a copy of the course files the notebooks read
(``notebooks/``, ``results/`` and ``grids/``, see :mod:`fseft_lab.course_files`); all other metadata is in
pyproject.toml."""
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

COURSE_FOLDERS = ("notebooks", "results", "grids")   # fseft_lab.course_files.COURSE_FOLDERS (not importable at build time)


class BuildWithCourseFiles(build_py):
    def run(self):
        super().run()
        if self.editable_mode:   # an editable install reads the clone's own folders
            return
        for folder in COURSE_FOLDERS:
            shutil.copytree(Path(folder), Path(self.build_lib) / "fseft_lab" / "course_files" / folder, dirs_exist_ok=True)


setup(cmdclass={"build_py": BuildWithCourseFiles})
