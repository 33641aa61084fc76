"""benchmarks/eval_refusal.py as a module, for the tests that pin its figures (the benchmarks
folder is not a package)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parent.parent


def load_eval() -> ModuleType:
    path = REPO / "benchmarks" / "eval_refusal.py"
    spec = importlib.util.spec_from_file_location("eval_refusal", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("eval_refusal", module)
    spec.loader.exec_module(module)
    return module
