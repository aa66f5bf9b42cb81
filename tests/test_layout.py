"""The layout states its tiers: imports point one way, and every public name has one home."""

import ast
from pathlib import Path

import pytest

import fc_jax

ROOT = Path(fc_jax.__file__).parent
CORE = (
    "types",
    "hparams",
    "layers",
    "normalization",
    "losses",
    "models",
    "optim",
    "train",
    "gradcheck",
    "precision",
)
RING = (
    "fc_jax.runs",
    "fc_jax.data",
    "fc_jax.storage",
    "fc_jax.report",
    "fc_jax.settings",
    "fc_jax.workdir",
    "fc_jax.cli",
)


def _modules():
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        yield name, path, ast.parse(path.read_text())


def _imports(tree) -> set[str]:
    """Every module a file imports, function-level imports included (`from a import b` gives a.b too)."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
    return out


def _under(name: str, prefixes) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


MODULES = list(_modules())


@pytest.mark.parametrize("name", [f"fc_jax.{m}" for m in CORE])
def test_core_imports_no_ring_module(name):
    tree = next(t for n, _, t in MODULES if n == name)
    assert not [i for i in _imports(tree) if _under(i, RING)]


@pytest.mark.parametrize("leaf", ["archive", "files", "trees", "model"])
def test_storage_files_and_model_import_nothing_from_runs(leaf):
    tree = next(t for n, _, t in MODULES if n == f"fc_jax.storage.{leaf}")
    assert not [i for i in _imports(tree) if _under(i, ("fc_jax.runs", "fc_jax.settings"))]


def test_nothing_outside_the_cli_imports_it():
    for name, _, tree in MODULES:
        if not _under(name, ("fc_jax.cli", "fc_jax.__main__")):
            assert not [i for i in _imports(tree) if _under(i, ("fc_jax.cli",))], name


def test_reference_and_data_never_import_jax():
    for name, _, tree in MODULES:
        if _under(name, ("fc_jax.reference", "fc_jax.data")):
            assert not [i for i in _imports(tree) if _under(i, ("jax", "jaxlib"))], name


def test_every_public_name_is_defined_where_it_is_listed():
    """No module-to-module re-exports: `__all__` of a plain module names only its own definitions
    (a package's `__init__` lists its modules; `fc_jax` itself re-exports lazily, by design; the
    `fc_jax.cs231n` facade mirrors the course's files, which present the course's names)."""
    for name, path, tree in MODULES:
        if path.name == "__init__.py" or _under(name, ("fc_jax.cs231n",)):
            continue
        defined, listed = set(), []
        for node in tree.body:
            if isinstance(node, ast.FunctionDef | ast.ClassDef):
                defined.add(node.name)
            elif isinstance(node, ast.Assign | ast.AnnAssign):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for t in targets:
                    if isinstance(t, ast.Name):
                        defined.add(t.id)
                        if t.id == "__all__":
                            listed = [ast.literal_eval(e) for e in node.value.elts]
        assert set(listed) <= defined, (name, sorted(set(listed) - defined))


@pytest.mark.parametrize("package", ["runs", "data", "storage", "report", "workdir"])
def test_ring_package_inits_list_their_modules(package):
    init = ROOT / package / "__init__.py"
    tree = ast.parse(init.read_text())
    (listed,) = [ast.literal_eval(n.value) for n in tree.body if isinstance(n, ast.Assign)]
    assert sorted(listed) == sorted(
        p.stem for p in init.parent.glob("*.py") if p.stem != "__init__"
    )


def test_loading_a_model_does_not_import_the_run_loop():
    import subprocess
    import sys

    code = (
        "import sys, fc_jax.storage.model, fc_jax.models; "
        "print(sorted(m for m in sys.modules if m.startswith(('fc_jax.runs', 'fc_jax.cli'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
