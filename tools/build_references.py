"""Write docs/references.md, the page every notebook's title cell links to, from tools/notebook_cells.SOURCES.

    python tools/build_references.py
"""
from pathlib import Path

from notebook_cells import SOURCES

lines = ["# References", "", "The sources the course notebooks cite (each notebook's title cell links here).", ""]
for key, (citation, arxiv, role) in SOURCES.items():
    lines.append(f'- <a id="{key}"></a>{citation}, [arXiv:{arxiv}](https://arxiv.org/abs/{arxiv}): {role}')
out = Path(__file__).resolve().parent.parent / "docs" / "references.md"
out.parent.mkdir(exist_ok=True)
out.write_text("\n".join(lines) + "\n")
print(f"wrote {out}")
