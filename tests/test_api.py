"""The library's public face: the package docstring's example runs as written, and every name the
package exports is the class or function it documents, whichever submodules are imported."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import textwrap
from pathlib import Path

import pytest

import chargen


def _docstring_example() -> str:
    """The indented lines of the package docstring: its example."""
    lines = chargen.__doc__.splitlines()
    block = [line for line in lines if line.startswith("    ") or not line.strip()]
    code = textwrap.dedent("\n".join(block)).strip()
    assert code.startswith("from chargen import"), code
    return code


def test_the_package_docstring_example_runs_as_written(
    lamp_text: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("notes.txt").write_text(lamp_text[:30_000], encoding="utf-8")  # the file the example names
    namespace: dict[str, object] = {}
    exec(compile(_docstring_example(), "chargen.__doc__", "exec"), namespace)
    summary = namespace["summary"]
    assert summary.steps == 100 and summary.run_dir.parent == Path("runs")  # type: ignore[attr-defined]


def test_every_export_is_what_it_names_after_every_submodule_is_imported() -> None:
    for module in pkgutil.walk_packages(chargen.__path__, "chargen."):
        if not module.name.endswith("__main__"):  # that one runs the command line
            importlib.import_module(module.name)  # sets the package's attribute for each submodule
    for name in chargen.__all__:
        if name == "__version__":
            continue
        exported = getattr(chargen, name)
        assert inspect.isclass(exported) or inspect.isfunction(exported), (name, exported)
        assert exported.__name__ == name, (name, exported)
        from_chargen: dict[str, object] = {}
        exec(f"from chargen import {name}", from_chargen)
        assert from_chargen[name] is exported, name
