"""The package's import structure (scripts/check_imports.py): no circles, nothing that runs back up, function-local
imports only for optional dependencies, no room above 15 % of the lines."""

from __future__ import annotations


from script_modules import load_script

check_imports = load_script("scripts/check_imports.py")


def test_the_package_has_no_circles_and_nothing_runs_back_up():
    report = check_imports.check()
    assert report.module_cycles == []
    assert report.room_cycles == []


def test_function_local_imports_are_only_for_optional_dependencies():
    assert check_imports.check().local_imports == []


def test_no_room_holds_more_than_15_percent_of_the_lines():
    shares = check_imports.check().shares
    assert shares and max(shares.values()) <= check_imports.MAX_SHARE, shares


def test_the_checker_finds_a_circle_and_a_local_import(tmp_path):
    pkg = tmp_path / "diffguard"
    (pkg / "a").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a" / "__init__.py").write_text("")
    (pkg / "a" / "one.py").write_text("from diffguard.two import f\n")
    (pkg / "two.py").write_text("def f():\n    from diffguard.a.one import f\n")
    report = check_imports.check(pkg)
    assert report.module_cycles == [["diffguard.a.one", "diffguard.two"]]
    assert report.room_cycles == [["diffguard.a", "diffguard.two"]]
    assert len(report.local_imports) == 1
