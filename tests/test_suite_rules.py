"""The test suite's own rules: a misspelled marker fails, and shared helpers come from tests/helpers,
never from conftest.py (which holds fixtures only)."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).parent


def test_markers_are_strict_and_helpers_are_importable_from_the_tests_folder(pytestconfig):
    assert "--strict-markers" in pytestconfig.getini("addopts")
    assert pytestconfig.option.strict_markers
    assert [Path(path) for path in pytestconfig.getini("pythonpath")] == [TESTS]


def test_no_test_imports_from_conftest_and_conftest_defines_only_fixtures():
    importers = [path.name for path in sorted(TESTS.rglob("*.py"))
                 for node in ast.walk(ast.parse(path.read_text()))
                 if isinstance(node, ast.ImportFrom) and node.module == "conftest"
                 or isinstance(node, ast.Import) and any(alias.name == "conftest" for alias in node.names)]
    assert importers == []
    conftest = ast.parse((TESTS / "conftest.py").read_text())
    defined = [node for node in conftest.body if isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.Assign))]
    not_fixtures = [node.name if hasattr(node, "name") else ast.unparse(node) for node in defined
                    if not (isinstance(node, ast.FunctionDef)
                            and any("fixture" in ast.unparse(decorator) for decorator in node.decorator_list))]
    assert not_fixtures == []
