"""Every notebook's generated .ipynb must match its MyST source, and be in the table of contents.

A failure here means someone edited a .md (or a .ipynb) without running
``python3 dev.py sync FILE.md``; nbval would otherwise test stale code.
"""
from __future__ import annotations

import re
from pathlib import Path

import jupytext
import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted(p for p in (ROOT / "book").rglob("*.md") if "kernelspec:" in p.read_text(encoding="utf-8")[:3000])


def _cells(nb):
    return [(c.cell_type, c.source.strip(), sorted(c.metadata.get("tags", []))) for c in nb.cells]


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 3, NOTEBOOKS


@pytest.mark.parametrize("md", NOTEBOOKS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_paired_ipynb_matches_source(md: Path):
    ipynb = md.with_suffix(".ipynb")
    assert ipynb.exists(), f"{ipynb.name} missing: run python3 dev.py sync {md.relative_to(ROOT)}"
    src, gen = jupytext.read(md), nbformat.read(ipynb, as_version=4)
    assert _cells(src) == _cells(gen), f"{ipynb.name} drifted from its source: run python3 dev.py sync {md.relative_to(ROOT)}"
    code = [c for c in gen.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in code), f"{ipynb.name} was not executed: run dev.py sync"


@pytest.mark.parametrize("md", NOTEBOOKS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_notebook_is_in_toc_and_cites_its_post(md: Path):
    toc = (ROOT / "_toc.yml").read_text(encoding="utf-8")
    entry = md.relative_to(ROOT).with_suffix("").as_posix()
    assert re.search(rf"file:\s*{re.escape(entry)}\s*$", toc, re.M), f"{entry} is not listed in _toc.yml"
    head = md.read_text(encoding="utf-8")[:4000]
    assert re.search(r"kexue\.fm/archives/\d+", head), "the header must link the original post"
    intro = (ROOT / "book" / "intro.md").read_text(encoding="utf-8")
    link = md.relative_to(ROOT / "book").with_suffix("").as_posix()
    assert f"<{link}>`" in intro, \
        f"the front page does not link {link}: run python3 tools/front_page_contents.py <syllabus README>"


@pytest.mark.parametrize("md", NOTEBOOKS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_first_cell_installs_kexue_lib_in_colab(md: Path):
    """The Colab install line points at the repository and branch set once in _config.yml."""
    import yaml

    repo = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]
    want = f"kexue-book @ git+{repo['url'].rstrip('/')}@{repo['branch']}"
    first = next(c for c in jupytext.read(md).cells if c.cell_type == "code")
    assert '"google.colab" in sys.modules' in first.source and want in first.source, \
        f"the first code cell must install {want!r} in Colab (copy the setup cell of templates/post.md)"
