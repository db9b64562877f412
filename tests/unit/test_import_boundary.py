"""`rlr` is a library: importing it must not pull in the daemon's stack."""

import ast
import subprocess
import sys
from pathlib import Path

FORBIDDEN = ("redis", "click", "structlog", "daemon", "pydantic_settings")
RLR = Path(__file__).resolve().parents[2] / "rlr"


def test_importing_every_rlr_module_loads_no_daemon_dependency():
    modules = sorted(f"rlr.{p.stem}" for p in RLR.glob("*.py") if p.stem != "__init__")
    code = (
        "import importlib, sys\n"
        f"for m in ['rlr', *{modules!r}]: importlib.import_module(m)\n"
        f"bad = [m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r}]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_no_rlr_source_file_imports_the_daemon_stack():
    # Also catches imports inside functions, which the runtime check above cannot see.
    for path in RLR.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in FORBIDDEN, f"{path.name} imports {name}"
