"""The layers of docs/architecture.md ("Layers"): no module imports from a layer above its own.

Read from the source (every ``import`` and ``from ... import`` of ``detection_api``, including
those inside functions), so a new upward import fails here with the file and the import named.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "functions" / "detection_api"

# Higher numbers sit above lower ones; a module may import its own layer and those below.
LAYERS = {
    "geo": 0,
    "cot": 0,
    "cot_types": 0,
    "model": 0,
    "core": 0,
    "decimal_arrays": 0,
    "record_event": 0,
    "store": 1,
    "tak": 2,
    "alerts": 2,
    "app": 3,
    "local": 3,
    "commands": 4,
    "cli": 4,
}
# Shared by every layer; they import nothing but each other (and the pure layer).
SHARED = {"settings", "auth", "logs", "stop_signal", "backoff"}
# Known upward imports, to be removed (issue 14): module -> the modules it may still import.
KNOWN: dict[str, set[str]] = {}


def area(module: str) -> str:
    """``detection_api.tak.forwarder`` -> ``tak``; ``detection_api.settings`` -> ``settings``."""
    return module.split(".")[1]


def imports_of(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "detection_api":  # from detection_api import settings
                found.update(f"detection_api.{a.name}" for a in node.names)
            elif node.module.startswith("detection_api."):
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("detection_api."))
    return found


def module_name(path: Path, package: Path = PACKAGE) -> str:
    relative = path.relative_to(package.parent).with_suffix("")
    parts = relative.parts[:-1] if relative.name == "__init__" else relative.parts
    return ".".join(parts)


def upward_imports(package: Path = PACKAGE) -> list[str]:
    problems = []
    for path in sorted(package.rglob("*.py")):
        module = module_name(path, package)
        if module == "detection_api":
            continue
        own = area(module)
        for imported in sorted(imports_of(path)):
            other = area(imported)
            if other.startswith("__"):  # the package's own attributes (__version__)
                continue
            if other == own or other in SHARED:
                continue
            if any(imported.startswith(k) for k in KNOWN.get(module, set())):
                continue
            if own in SHARED:
                allowed = LAYERS.get(other, 99) == 0
            else:
                allowed = LAYERS.get(other, 99) <= LAYERS[own]
            if not allowed:
                problems.append(f"{path.relative_to(package.parent)}: {module} imports {imported}")
    return problems


def test_every_package_area_has_a_layer() -> None:
    areas = {area(module_name(p)) for p in PACKAGE.rglob("*.py") if p.stem != "__init__"}
    areas |= {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert areas - LAYERS.keys() - SHARED == set()


def test_no_module_imports_from_a_layer_above_its_own() -> None:
    assert upward_imports() == []


def test_the_check_reports_upward_imports_and_only_those(tmp_path: Path) -> None:
    package = tmp_path / "detection_api"
    for folder in ("store", "app", "geo"):
        (package / folder).mkdir(parents=True)
        (package / folder / "__init__.py").write_text("")
    (package / "store" / "records.py").write_text(
        "from detection_api.geo.types import Geolocation\n"  # down: fine
        "from detection_api.settings import Settings\n"  # shared: fine
        "from detection_api.store import atomic\n"  # own layer: fine
        "def late():\n    import detection_api.app.problems\n"  # up, inside a function
    )
    (package / "geo" / "locate.py").write_text("from detection_api.store.records import x\n")
    assert upward_imports(package) == [
        "detection_api/geo/locate.py: detection_api.geo.locate imports detection_api.store.records",
        "detection_api/store/records.py: detection_api.store.records imports "
        "detection_api.app.problems",
    ]
