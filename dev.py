#!/usr/bin/env python3
"""kexue-book's developer commands. Needs only Python >= 3.10; creates ./.venv itself.

    python3 dev.py test [PYTEST ARGS]   run kexue_lib's tests and every notebook (pytest --nbval)
    python3 dev.py book                 build the HTML book into _build/html (warnings are errors)
    python3 dev.py sync [NOTEBOOK.md]   write each notebook's paired .ipynb and store its outputs
    python3 dev.py bench [ARGS]         benchmarks/run.py: kexue_lib's kernels against their peers
                                        (install the peers first: .venv/bin/pip install -e '.[bench]')
    python3 dev.py env                  only create/refresh the environment

Examples: ``python3 dev.py test book/part1-probability/squareplus.ipynb`` runs one notebook;
``python3 dev.py test tests/test_probability.py -k sparsemax`` runs some library tests.

Environment variables:
  KEXUE_TORCH=cpu   install a CPU-only torch build (CI sets this; the default install gives
                    whatever pip picks, a CUDA build on a Linux GPU machine)
  KEXUE_VENV=DIR    use another environment directory than ./.venv
"""
from __future__ import annotations

import glob
import hashlib
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = Path(os.environ.get("KEXUE_VENV", ROOT / ".venv"))
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / ("python.exe" if os.name == "nt" else "python")
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
# Settings every notebook run shares (tests, book build, sync): the one place they live.
RUN_ENV = {
    "KEXUE_WIDGETS": "static",     # widgets render one deterministic frame without a kernel
    "PYTHONHASHSEED": "0",
    "MPLBACKEND": "module://matplotlib_inline.backend_inline",
    "PYDEVD_DISABLE_FILE_VALIDATION": "1",  # silences a debugpy warning on stderr in kernels
    # One thread per kernel: stored outputs do not depend on the core count (reductions split
    # differently), and parallel runs (pytest-xdist, several syncs) do not oversubscribe.
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}


def sh(*cmd: object, env: dict | None = None) -> None:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    full_env = {**os.environ, **RUN_ENV, **(env or {})}
    subprocess.run([str(c) for c in cmd], cwd=ROOT, env=full_env, check=True)


def _digest(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(p.name.encode())
        h.update(p.read_bytes())
    h.update(os.environ.get("KEXUE_TORCH", "").encode())
    return h.hexdigest()[:16]


def _local_cpu_torch_wheel() -> str | None:
    """A CPU torch wheel in pip's configured find-links, if the machine keeps one."""
    try:
        out = subprocess.run([str(PY), "-m", "pip", "config", "list"], capture_output=True, text=True).stdout
    except OSError:
        return None
    tag = f"cp{sys.version_info.major}{sys.version_info.minor}"
    for line in out.splitlines():
        if "find-links" in line:
            for loc in line.split("=", 1)[1].strip().strip("'\"").split():
                hits = sorted(glob.glob(os.path.join(loc.replace("file://", ""), f"torch-*+cpu-{tag}-*.whl")))
                if hits:
                    return hits[-1]
    return None


def ensure_env() -> None:
    """Create .venv and install requirements.txt (once per change of the requirements)."""
    if sys.version_info < (3, 10):
        sys.exit(f"kexue-book needs Python >= 3.10; this is {sys.version.split()[0]}")
    stamp = VENV / ".kexue-stamp"
    want = _digest([ROOT / "requirements.txt", ROOT / "pyproject.toml"])
    if stamp.exists() and stamp.read_text().strip() == want and PY.exists():
        return
    if not PY.exists():
        print(f"creating {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    pip = [PY, "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    if os.environ.get("KEXUE_TORCH", "").lower() == "cpu":
        wheel = _local_cpu_torch_wheel()
        if wheel:
            sh(*pip, wheel)
        else:
            sh(*pip, "torch>=2.1,<3", "--index-url", TORCH_CPU_INDEX, "--extra-index-url", "https://pypi.org/simple")
    sh(*pip, "-r", ROOT / "requirements.txt")
    # Build matplotlib's font cache now, so its one-off notice never reaches a notebook's stderr.
    sh(PY, "-c", "import matplotlib.pyplot")
    stamp.write_text(want + "\n")


def library_digest() -> str:
    return _digest(sorted((ROOT / "kexue_lib").rglob("*.py")))


def cmd_test(args: list[str]) -> None:
    ensure_env()
    sh(PY, "-m", "pytest", "--nbval", *args)


def cmd_book(args: list[str]) -> None:
    ensure_env()
    # jupyter-cache re-executes a notebook only when its code changes; a change to kexue_lib
    # must re-execute every notebook too, so the cache is keyed on the library's sources.
    build = ROOT / "_build"
    key_file = build / ".kexue_lib-digest"
    key = library_digest() + "-widgets=html"
    if not key_file.exists() or key_file.read_text().strip() != key:
        if (build / ".jupyter_cache").exists():
            print("kexue_lib changed: clearing the execution cache, rebuilding every page", flush=True)
            args = ["--all", *args]   # else Sphinx keeps the pages of notebooks whose .md did not change
        shutil.rmtree(build / ".jupyter_cache", ignore_errors=True)
    build.mkdir(exist_ok=True)
    key_file.write_text(key + "\n")   # what the cache is about to be filled with
    # In the built book no kernel runs: widgets become client-side sliders over precomputed frames.
    sh(BIN / "jupyter-book", "build", ROOT, "--warningiserror", "--nitpick", "--keep-going", *args,
       env={"KEXUE_WIDGETS": "html"})
    print(f"\nThe book is at {build / 'html' / 'index.html'}")


def cmd_sync(args: list[str]) -> None:
    ensure_env()
    targets = args or [str(p) for p in sorted((ROOT / "book").rglob("*.md")) if _is_notebook(p)]
    sh(PY, ROOT / "tools" / "sync_notebooks.py", *targets)


def cmd_bench(args: list[str]) -> None:
    """benchmarks/run.py on every core (RUN_ENV's one-thread setting is for notebooks only)."""
    ensure_env()
    cmd = [str(PY), str(ROOT / "benchmarks" / "run.py"), *args]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=ROOT, check=True)


def _is_notebook(path: Path) -> bool:
    return "kernelspec:" in path.read_text(encoding="utf-8")[:3000]


def main() -> None:
    commands = {"test": cmd_test, "book": cmd_book, "sync": cmd_sync, "bench": cmd_bench,
                "env": lambda a: ensure_env()}
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        sys.exit(__doc__)
    try:
        commands[sys.argv[1]](sys.argv[2:])
    except subprocess.CalledProcessError as err:
        sys.exit(err.returncode)


if __name__ == "__main__":
    main()
