"""Sphinx extension: read kexue_lib's plain-text formulas in docstrings as code, not as RST.

kexue_lib docstrings carry their equations as indented ASCII blocks, which read well in
``help()`` and in an editor::

    The post measures the gradient by

        (1/2) * sum_ij |dp_i/ds_j| = alpha * (1 - sum_i p_i^2),

reStructuredText would take such a block for a block quote and ``|dp_i/ds_j|`` for a
substitution reference (an error under ``-W``). This hook, run on every docstring after
napoleon, turns each indented block that follows a blank line into a literal block
(the paragraph before it gets RST's ``::`` marker) and escapes ``|`` in prose outside
inline literals, so authors never have to write RST for the API page.
"""
from __future__ import annotations

import re

_INLINE_LITERAL = re.compile(r"(``.+?``)")
_STARTS_MARKUP = re.compile(r"^\s*(\.\. |:[\w ]+:|[-*+] |\d+\. |>>> )")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _escape_bars(line: str) -> str:
    parts = _INLINE_LITERAL.split(line)
    return "".join(p if i % 2 else re.sub(r"(?<!\\)\|", r"\\|", p) for i, p in enumerate(parts))


def literal_formula_blocks(lines: list[str]) -> list[str]:
    """Return ``lines`` with indented formula blocks made literal and stray ``|`` escaped."""
    out: list[str] = []
    i, n = 0, len(lines)
    while i < n:
        line = lines[i]
        prev = next((out[j] for j in range(len(out) - 1, -1, -1) if out[j].strip()), None)
        starts_block = (
            line.strip() and i > 0 and not lines[i - 1].strip() and prev is not None
            and _indent(line) > _indent(prev) and not _STARTS_MARKUP.match(prev)
        )
        if starts_block:
            j = len(out) - 1
            while not out[j].strip():
                j -= 1
            if not out[j].rstrip().endswith("::"):
                out[j] = out[j].rstrip()[:-1] + "::" if out[j].rstrip().endswith(":") else out[j].rstrip() + " ::"
            base = _indent(prev)
            while i < n and (not lines[i].strip() or _indent(lines[i]) > base):
                out.append(lines[i])
                i += 1
            continue
        if prev is not None and prev.rstrip().endswith("::") and not line.strip():
            out.append(line)
            i += 1
            # an author-written literal block: copy it verbatim
            base = _indent(prev)
            while i < n and (not lines[i].strip() or _indent(lines[i]) > base):
                out.append(lines[i])
                i += 1
            continue
        out.append(line if line.lstrip().startswith((".. ", ">>> ")) else _escape_bars(line))
        i += 1
    return out


def _process(app, what, name, obj, options, lines: list[str]) -> None:
    if name.startswith("kexue_lib"):
        lines[:] = literal_formula_blocks(lines)


def setup(app):
    app.setup_extension("sphinx.ext.napoleon")        # napoleon's hook runs first
    app.connect("autodoc-process-docstring", _process, priority=600)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
