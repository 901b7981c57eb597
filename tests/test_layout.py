"""Import arrows that must not exist: bench <-> tests, and providers -> discovery."""
from __future__ import annotations

import ast
from pathlib import Path

from conftest import ROOT

LOADERS = ("spec_from_file_location", "SourceFileLoader", "run_path", "import_module")


def imported(path: Path) -> set[str]:
    """Every module an `import` or `from ... import` names, and the top package of each."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found = [node.module]
        else:
            continue
        for name in found:
            names |= {name, name.split(".")[0]}
    return names


def loads_a_file_from(path: Path, folder: str) -> bool:
    """A module loaded by file path out of `folder` (importlib/runpy), which `import` scanning misses."""
    tree = ast.parse(path.read_text(), str(path))
    calls_loader = any(isinstance(n, ast.Attribute) and n.attr in LOADERS or isinstance(n, ast.Name) and n.id in LOADERS
                       for n in ast.walk(tree))
    names_folder = any(isinstance(n, ast.Constant) and isinstance(n.value, str)
                       and folder in Path(n.value).parts for n in ast.walk(tree))
    return calls_loader and names_folder


def crossings(source: str, target: str) -> list[str]:
    modules = {p.stem for p in (ROOT / target).glob("*.py")} | {target}
    found = []
    for path in sorted((ROOT / source).glob("*.py")):
        bad = sorted(imported(path) & modules)
        if bad or loads_a_file_from(path, target):
            found.append(f"{source}/{path.name} -> {target}/: {', '.join(bad) or 'loaded by file path'}")
    return found


def test_bench_and_tests_never_import_each_other():
    assert crossings("bench", "tests") == []
    assert crossings("tests", "bench") == []


def test_the_check_sees_both_kinds_of_crossing(tmp_path):
    fake = tmp_path / "t.py"
    fake.write_text("import importlib.util\nspec = importlib.util.spec_from_file_location('c', ROOT / 'bench' / 'x.py')\n")
    assert loads_a_file_from(fake, "bench") and not loads_a_file_from(fake, "tests")
    fake.write_text("from test_faults import FAULTS\nimport vertex_server\n")
    assert {"test_faults", "vertex_server"} <= imported(fake)


def test_providers_never_import_discovery():
    for path in sorted((ROOT / "rules" / "skillbuild" / "providers").glob("*.py")):
        assert not {"skillbuild.discovery"} & imported(path), f"{path.name} imports discovery"
