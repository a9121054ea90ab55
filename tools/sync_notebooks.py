"""Write each MyST notebook's paired .ipynb, executed, with its outputs stored.

The .md file is the source a person edits; the .ipynb beside it is generated: it is what
nbval executes and compares against, and what "Open in Colab" opens. Run through
``python3 dev.py sync [FILE.md ...]`` (which sets the shared run environment).
``tests/test_notebook_sync.py`` fails when a .ipynb no longer matches its .md.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import jupytext
import nbformat
from nbclient import NotebookClient

TIMEOUT = 120  # seconds per cell; the book's budget is 30 s per notebook, see CONTRIBUTING.md


def sync(md: Path) -> float:
    nb = jupytext.read(md)
    nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
    nb.metadata.setdefault("jupytext", {})["formats"] = "md:myst,ipynb"
    t0 = time.perf_counter()
    NotebookClient(nb, timeout=TIMEOUT, kernel_name="python3",
                   resources={"metadata": {"path": str(md.parent)}}).execute()
    seconds = time.perf_counter() - t0
    for cell in nb.cells:  # keep the stored file free of run-to-run noise
        cell.metadata.pop("execution", None)
    nb.metadata.pop("widgets", None)
    out = md.with_suffix(".ipynb")
    nbformat.write(nb, out)
    return seconds


def main(paths: list[str]) -> None:
    for p in paths:
        md = Path(p).resolve()
        if md.suffix != ".md":
            sys.exit(f"{p}: give the .md source, not the generated .ipynb")
        print(f"{md.relative_to(Path.cwd()) if md.is_relative_to(Path.cwd()) else md}: "
              f"executed in {sync(md):.1f} s", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
