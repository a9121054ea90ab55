"""Settings shared by every pytest run from the repository root (library tests and nbval).

nbval starts one kernel per notebook as a child of this process, so environment variables
set here reach the notebooks: widgets render their deterministic static frame.
"""
import os

os.environ.setdefault("KEXUE_WIDGETS", "static")
os.environ.setdefault("PYTHONHASHSEED", "0")
os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
