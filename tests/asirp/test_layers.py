"""The core engine never imports the control system (checked at run time and in the source)."""

from __future__ import annotations

import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

import asirp

FORBIDDEN = ("tango", "bluesky", "ophyd", "ophyd_async", "tiled", "databroker", "event_model")


def test_importing_every_core_module_loads_no_control_system_package():
    modules = [info.name for info in pkgutil.walk_packages(asirp.__path__, "asirp.")]
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r}))\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert completed.stdout.strip() == "[]"
    assert "asirp.methods.richardson_lucy" in modules


def test_no_core_source_file_names_a_control_system_package():
    offenders = []
    for path in Path(asirp.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in FORBIDDEN]
    assert offenders == []
