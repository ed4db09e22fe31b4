"""What the import-linter contracts (``pyproject.toml``, ``ARCHITECTURE.md``) cannot say.

The contracts read the source: they see every import statement, also inside functions, but not
what a module loads at run time through third-party packages or ``importlib``, nor which imports
are deferred to a handler, nor submodules of external packages. These checks run the imports.
"""

from __future__ import annotations

import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

import asirp
import asirp_device

CONTROL_SYSTEM = ("tango", "bluesky", "ophyd", "ophyd_async", "tiled", "databroker", "event_model")


def loaded_roots(code: str) -> str:
    """Run ``code`` in a fresh interpreter and return what it prints."""
    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    return completed.stdout.strip()


def test_importing_every_core_module_loads_no_control_system_package():
    modules = [info.name for info in pkgutil.walk_packages(asirp.__path__, "asirp.")]
    assert "asirp.methods.richardson_lucy" in modules
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {CONTROL_SYSTEM!r}))\n"
    )
    assert loaded_roots(code) == "[]"


def test_the_device_package_and_its_cli_command_load_no_control_system_nor_torch():
    code = (
        "import sys, asirp_device, asirp_device.command\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & "
        "{'tango', 'ophyd_async', 'bluesky', 'torch'}))"
    )
    assert loaded_roots(code) == "[]"


def test_the_device_client_never_imports_the_tango_server_api():
    # import-linter forbids only whole external packages; the client needs ``tango`` itself.
    source = Path(asirp_device.__file__).with_name("client.py").read_text(encoding="utf-8")
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    assert "tango.server" not in names
