"""The import rules of docs/ARCHITECTURE.md, checked on every module's imports."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "semcache"


def imports_of(path: Path) -> set[str]:
    """Absolute names of every module ``path`` imports (relative imports resolved)."""
    module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            names.add(target)
            names.update(f"{target}.{alias.name}" for alias in node.names)
    return names


MODULES = {
    str(path.relative_to(PACKAGE.parent)): imports_of(path) for path in PACKAGE.rglob("*.py")
}


def offenders(where: str, banned: tuple[str, ...], exempt: tuple[str, ...] = ()) -> list[str]:
    found = []
    for name, imported in sorted(MODULES.items()):
        if not name.startswith(where) or name.startswith(exempt):
            continue
        for target in sorted(imported):
            if target.startswith(banned):
                found.append(f"{name} imports {target}")
    return found


def test_modules_were_found() -> None:
    assert len(MODULES) > 50


@pytest.mark.parametrize("framework", ["fastapi", "starlette"])
def test_nothing_below_api_imports_the_web_framework(framework: str) -> None:
    # The HTTP layer (api/, and app.py that builds it) and the simulator, a server of its
    # own, are the only places that know about FastAPI.
    exempt = ("semcache/api/", "semcache/app.py", "semcache/simulator/")
    assert offenders("semcache/", (framework,), exempt) == []


def test_nothing_but_upstream_imports_httpx() -> None:
    assert offenders("semcache/", ("httpx",), ("semcache/upstream/",)) == []


def test_store_imports_neither_embed_nor_cache() -> None:
    assert offenders("semcache/store/", ("semcache.embed", "semcache.cache")) == []


def test_wire_formats_import_only_errors() -> None:
    others = tuple(
        f"semcache.{p.name}" for p in PACKAGE.iterdir() if p.is_dir() and p.name != "wire"
    )
    banned = (*others, "semcache.app", "semcache.config", "semcache.cli")
    assert offenders("semcache/wire/", banned) == []
