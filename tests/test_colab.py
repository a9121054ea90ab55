"""Open-in-Colab, simulated: a fresh virtualenv with only Jupyter's execution machinery runs an
exported notebook whose first cell installs kexue_lib (here from this checkout, as Colab would
from the repository) and then runs to the end.

Slow (it installs kexue_lib and its dependencies into a new environment), so it runs only
with ``KEXUE_COLAB_TEST=1`` (CI sets it).
"""
from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(os.environ.get("KEXUE_COLAB_TEST") != "1",
                                reason="slow; set KEXUE_COLAB_TEST=1 to run")

# Makes `"google.colab" in sys.modules` true in the kernel, as it is in Colab.
FAKE_COLAB = "import sys, types\nsys.modules.setdefault('google', types.ModuleType('google'))\n" \
             "sys.modules['google.colab'] = types.ModuleType('google.colab')\n"


def test_exported_notebook_installs_kexue_lib_and_runs(tmp_path):
    import torch

    notebook = ROOT / "book" / "part1-probability" / "squareplus.ipynb"
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    py = env_dir / "bin" / "python"
    pip = [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "nbclient>=0.9", "ipykernel>=6.25", "nbformat"], check=True)
    probe = "import importlib.util as u; print(u.find_spec('kexue_lib') is None, u.find_spec('torch') is None)"
    # Run from tmp_path: from the checkout, `python -c` would find kexue_lib on sys.path[0].
    assert subprocess.run([str(py), "-c", probe], capture_output=True, text=True, check=True,
                          cwd=tmp_path).stdout.split() == ["True", "True"]

    ipython_dir = tmp_path / "ipython"
    (ipython_dir / "profile_default" / "startup").mkdir(parents=True)
    (ipython_dir / "profile_default" / "startup" / "00-fake-colab.py").write_text(FAKE_COLAB)
    # The same torch as this environment (on a machine that keeps a CPU wheel, no multi-GB download).
    constraints = tmp_path / "constraints.txt"
    constraints.write_text(f"torch=={torch.__version__}\n")
    env = {**os.environ, "IPYTHONDIR": str(ipython_dir), "KEXUE_LIB_SOURCE": str(ROOT),
           "PIP_CONSTRAINT": str(constraints), "KEXUE_WIDGETS": "auto", "VIRTUAL_ENV": str(env_dir),
           "PATH": f"{env_dir / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    env.pop("PYTHONPATH", None)
    run = (
        "import nbformat, sys\nfrom nbclient import NotebookClient\n"
        f"nb = nbformat.read({str(notebook)!r}, as_version=4)\n"
        "for c in nb.cells:\n    if c.cell_type == 'code': c.outputs = []\n"
        f"NotebookClient(nb, timeout=600, kernel_name='python3', resources={{'metadata': {{'path': {str(tmp_path)!r}}}}}).execute()\n"
        "print('ran', sum(c.cell_type == 'code' for c in nb.cells), 'code cells')\n"
    )
    out = subprocess.run([str(py), "-c", run], env=env, capture_output=True, text=True, timeout=1800, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "ran" in out.stdout
    # kexue_lib now lives in the fresh environment, installed by the notebook's first cell.
    where = subprocess.run([str(py), "-c", "import kexue_lib; print(kexue_lib.__file__)"],
                           capture_output=True, text=True, check=True, cwd=tmp_path).stdout.strip()
    assert where.startswith(str(env_dir)), where
