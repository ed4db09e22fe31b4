"""Import layers of the Tango adapter: what each module may load."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import asirp_device

PACKAGE = Path(asirp_device.__file__).parent


def imported_modules(module: str) -> set[str]:
    """Every module named by an import statement of ``asirp_device/<module>.py``."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def roots(names: set[str]) -> set[str]:
    return {name.split(".")[0] for name in names}


def test_the_component_never_imports_tango_or_bluesky():
    assert roots(imported_modules("component")).isdisjoint({"tango", "bluesky", "ophyd_async"})


def test_live_mode_never_imports_tango():
    assert roots(imported_modules("live")).isdisjoint({"tango", "ophyd_async"})
    assert "asirp_device.server" not in imported_modules("live")


def test_plans_can_use_the_client_without_the_server_module():
    names = imported_modules("client")
    assert "asirp_device.server" not in names
    assert "tango.server" not in names
    assert "asirp_device.component" not in names
    assert not any(name == "asirp" or name.startswith("asirp.") for name in names)


def test_the_package_and_the_cli_command_load_no_control_system():
    code = (
        "import sys, asirp_device, asirp_device.command\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & "
        "{'tango', 'ophyd_async', 'bluesky', 'torch'}))"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert completed.stdout.strip() == "[]"
