"""Sphinx extension for the book: offline MathJax, no thebe, and API links in every chapter.

**API links.** Each notebook page ends with a "kexue_lib in this chapter" box that links
every ``kexue_lib`` function and class the notebook's code uses to the API reference
(found from ``from kexue_lib.x import ...`` lines and ``kx.name`` uses; an unknown name
fails the ``-n -W`` build).

**Offline MathJax.**
It also drops sphinx-thebe's scripts from every page: the book does not launch remote
kernels (readers use Colab), and Jupyter Book 1 registers those scripts twice, which
makes the browser report "Identifier 'THEBE_JS_URL' has already been declared".

MathJax 3 comes from the ``django-static-mathjax`` package (a plain copy of MathJax's
``es5`` distribution). We copy the one combined component the book needs
(``tex-mml-chtml.js``), its CHTML web fonts, the TeX extensions it may autoload and its
menu/accessibility parts into ``_static/mathjax/``, and point ``mathjax_path`` there.
"""
from __future__ import annotations

import importlib
import inspect
import re
import shutil
from pathlib import Path

PARTS = ["tex-mml-chtml.js", "input/tex/extensions", "output/chtml/fonts/woff-v2", "ui", "a11y", "adaptors"]


def _mathjax_root() -> Path:
    import mathjax  # django-static-mathjax

    root = Path(mathjax.__file__).parent / "static" / "mathjax" / "es5"
    if not (root / "tex-mml-chtml.js").exists():
        raise RuntimeError(f"MathJax files not found under {root}")
    return root


def _configure(app) -> None:
    app.config.mathjax_path = "mathjax/tex-mml-chtml.js"  # relative to _static


def _copy(app, exception) -> None:
    if exception is not None or app.builder.format != "html":
        return
    src, dst = _mathjax_root(), Path(app.outdir) / "_static" / "mathjax"
    for part in PARTS:
        s, d = src / part, dst / part
        d.parent.mkdir(parents=True, exist_ok=True)
        if s.is_dir():
            shutil.copytree(s, d, dirs_exist_ok=True)
        else:
            shutil.copy2(s, d)


def _drop_thebe(app, pagename, templatename, context, doctree) -> None:
    scripts = context.get("script_files")
    if scripts is None:
        return
    keep = [js for js in scripts
            if "thebe" not in str(js) and "THEBE" not in str(getattr(js, "attributes", {}).get("body", ""))]
    scripts[:] = keep


_IMPORT = re.compile(r"^from (kexue_lib(?:\.\w+)*) import (?:\(([^)]*)\)|([\w, ]+)$)", re.M)
_ALIAS = re.compile(r"^import (kexue_lib(?:\.\w+)*) as (\w+)", re.M)


def library_names(source: str) -> list[str]:
    """Fully qualified kexue_lib objects a notebook's source uses, in order of first use."""
    found: list[str] = []
    for mod, grouped, single in _IMPORT.findall(source):
        names = grouped or single
        found += [f"{mod}.{n.strip()}" for n in names.replace("\n", ",").split(",") if n.strip()]
    for mod, alias in _ALIAS.findall(source):
        found += [f"{mod}.{n}" for n in re.findall(rf"\b{alias}\.(\w+)", source)]
    out: list[str] = []
    for full in found:
        mod, _, name = full.rpartition(".")
        try:
            obj = getattr(importlib.import_module(mod), name)
        except (ImportError, AttributeError):
            out.append(full)  # let the nitpicky build report it
            continue
        if inspect.ismodule(obj):
            continue
        real = f"{getattr(obj, '__module__', mod)}.{getattr(obj, '__qualname__', name)}"
        role = "class" if inspect.isclass(obj) else "func"
        entry = f"{{py:{role}}}`~{real}`"
        if entry not in out:
            out.append(entry)
    return out


def _append_api_links(app, docname, source) -> None:
    text = source[0]
    if "kernelspec:" not in text[:3000] or "kexue_lib" not in text:
        return
    links = library_names(text)
    if links:
        source[0] = text.rstrip() + (
            "\n\n+++\n\n:::{seealso}\n**kexue_lib in this chapter** ({doc}`API reference </book/api>`): "
            + ", ".join(links) + "\n:::\n")


def setup(app):
    app.connect("source-read", _append_api_links)
    app.connect("builder-inited", _configure)
    app.connect("html-page-context", _drop_thebe)
    app.connect("build-finished", _copy)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
