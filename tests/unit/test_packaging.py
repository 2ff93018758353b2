"""The project installs as one package: lean for production, pinned for make, entry points that resolve."""

from __future__ import annotations

import ast
import importlib
import re
import subprocess
import sys
import tomllib

import pytest

from tests.paths import REPO_ROOT

PYPROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]
DEV_ONLY = {"moto", "flask", "flask-cors", "boto3", "matplotlib", "cantools", "pytest"}
"""What a production install (no extras) of the receiver, consumer and aggregator must not carry."""


def requirement_name(spec: str) -> str:
    return re.split(r"[\s\[<>=!~;]", spec.strip(), maxsplit=1)[0].lower()


def pinned(path: str) -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in (REPO_ROOT / path).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            pins[requirement_name(name)] = version
    return pins


def test_a_production_install_carries_no_embedded_aws_plots_or_test_tools() -> None:
    """`pip install .` brings only what the services run on; moto, flask, matplotlib come with extras."""
    runtime = {requirement_name(spec) for spec in PROJECT["dependencies"]}
    assert runtime.isdisjoint(DEV_ONLY), runtime & DEV_ONLY
    extras = PROJECT["optional-dependencies"]
    assert {requirement_name(spec) for spec in extras["embedded"]} >= {"moto", "flask"}
    assert "matplotlib" in {requirement_name(spec) for spec in extras["plot"]}


def test_every_declared_dependency_is_pinned_in_the_set_make_installs() -> None:
    """requirements.txt pins everything but the test tools; requirements-test.txt pins those."""
    runtime_pins, test_pins = pinned("requirements.txt"), pinned("requirements-test.txt")
    extras = PROJECT["optional-dependencies"]
    for spec in PROJECT["dependencies"] + extras["simulator"] + extras["plot"] + extras["embedded"]:
        assert requirement_name(spec) in runtime_pins, f"{spec} is not pinned in requirements.txt"
    for spec in extras["test"]:
        name = requirement_name(spec)
        assert name == PROJECT["name"] or name in test_pins, f"{spec} is not pinned in requirements-test.txt"


def test_the_services_import_nothing_from_the_extras() -> None:
    """Importing the three services loads no module of moto, flask, matplotlib or cantools."""
    code = (
        "import sys, src.receiver.app, src.consumer.batch_consumer, src.aggregator.hourly_stats; "
        "print('\\n'.join(sorted({name.split('.')[0] for name in sys.modules})))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    loaded = set(done.stdout.split())
    assert loaded.isdisjoint({"moto", "flask", "matplotlib", "cantools", "boto3", "pytest"}), loaded


@pytest.mark.parametrize("command", sorted(PROJECT["scripts"]))
def test_every_entry_point_names_a_callable_main(command: str) -> None:
    module, _, function = PROJECT["scripts"][command].partition(":")
    assert callable(getattr(importlib.import_module(module), function))


def test_nothing_edits_the_import_path() -> None:
    """Scripts and tests import the installed package; none of them puts the checkout on the path."""
    needle = "sys." + "path"
    offenders = [
        str(path.relative_to(REPO_ROOT))
        for folder in ("src", "scripts", "tests")
        for path in (REPO_ROOT / folder).rglob("*.py")
        if needle in path.read_text()
    ]
    assert offenders == []


ALLOWED_IMPORTS = {
    "common": set(),
    "receiver": {"common"},
    "consumer": {"common"},
    "aggregator": {"common"},
    "generator": {"common"},
    "ops": {"common"},
    "embedded": {"common", "ops"},
    "loadtest": {"common", "embedded"},
    "dashboard": {"common"},
}
"""Which subpackages each may import: services speak only ``common``; tools build on services' commands."""


def imported_subpackages(package: str) -> set[str]:
    found: set[str] = set()
    for path in (REPO_ROOT / "src" / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            found.update(name.split(".")[1] for name in names if name.startswith("src."))
    return found - {package}


@pytest.mark.parametrize("package", sorted(ALLOWED_IMPORTS))
def test_no_service_imports_another(package: str) -> None:
    """The layout is the architecture: a package imports only what sits below it."""
    assert imported_subpackages(package) <= ALLOWED_IMPORTS[package]


def test_every_subpackage_has_its_place_in_the_layout() -> None:
    packages = {path.parent.name for path in (REPO_ROOT / "src").glob("*/__init__.py")}
    assert packages == set(ALLOWED_IMPORTS)
