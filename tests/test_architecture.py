"""The layers of the code (docs/METHOD.md, "Layers of the code"): no import runs from a lower layer to a higher
one, and the config layer, the search spaces and the analysis start without torch or Ray."""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("raysearch", "analysis", "search_spaces")
# lowest first: a module may import from its own layer and the layers below it
LAYERS = {
    "config": ("raysearch", "raysearch.errors", "raysearch.config", "raysearch.experiment", "raysearch.schedule",
               "raysearch.metrics", "raysearch.reporting", "raysearch.redact", "raysearch.run_folder", "raysearch.model_card",
               "raysearch.fields"),
    "model parts": ("raysearch.heads", "raysearch.optim", "raysearch.pruning", "raysearch.remote_code"),
    "loading": ("raysearch.models", "raysearch.data", "raysearch.synthetic", "raysearch.checkpoints",
                "raysearch.tasks"),
    "composition": ("raysearch.transfer", "raysearch.distill", "raysearch.exported", "raysearch.hf", "raysearch.stock_export"),
    "loop": ("raysearch.loop", "raysearch.trainer"),
    "search spaces": ("search_spaces",),
    "analysis": ("analysis",),
    "ray glue": ("raysearch.distributed",),
    "cli": ("raysearch.cli", "raysearch.models_out", "raysearch.__main__", "raysearch.search_cli", "raysearch.train_cli"),
}


def layer_of(module: str) -> int:
    """The index of the layer that owns `module` (the longest listed prefix; the bare `raysearch` only itself)."""
    best = None
    for index, (_, prefixes) in enumerate(LAYERS.items()):
        for prefix in prefixes:
            exact_only = prefix == "raysearch"
            if module == prefix or (not exact_only and module.startswith(prefix + ".")):
                if best is None or len(prefix) > best[1]:
                    best = (index, len(prefix))
    if best is None:
        raise AssertionError(f"{module} is in no layer: add it to LAYERS here and to docs/METHOD.md")
    return best[0]


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, root: Path = ROOT) -> list[str]:
    """Every project module `path` imports, at the top or inside a function."""
    module = module_name(path, root)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            # `from . import data` names a module; `from .config import X` names an attribute
            found += [f"{base}.{alias.name}" if node.module is None else base for alias in node.names]
    return [name for name in found if name.split(".")[0] in PACKAGES]


def source_files():
    return sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py"))


def test_no_import_runs_up_a_layer():
    names = list(LAYERS)
    upward = []
    for path in source_files():
        source = module_name(path)
        for target in imports_of(path):
            if layer_of(target) > layer_of(source):
                upward.append(f"{source} ({names[layer_of(source)]}) imports {target} ({names[layer_of(target)]})")
    assert not upward, "\n".join(upward)


def test_the_layer_check_catches_an_upward_import(tmp_path):
    # a pruning module that reaches up into the loop, as a relative import inside a function
    fake = tmp_path / "raysearch" / "pruning" / "fake.py"
    fake.parent.mkdir(parents=True)
    fake.write_text("def f():\n    from ..loop import run\n    from . import gates\n")
    assert imports_of(fake, root=tmp_path) == ["raysearch.loop", "raysearch.pruning.gates"]
    assert layer_of("raysearch.loop") > layer_of("raysearch.pruning.fake")
    with pytest.raises(AssertionError, match="in no layer"):
        layer_of("raysearch.unlisted")


def test_every_layer_is_named_in_the_method_doc():
    method = (ROOT / "docs" / "METHOD.md").read_text()
    for name, prefixes in LAYERS.items():
        assert f"**{name}**" in method, name
        for prefix in prefixes:
            assert f"`{prefix}`" in method, prefix


@pytest.mark.parametrize("code", [
    "import analysis, search_spaces, raysearch.config",
    "from raysearch.cli import main; main(['status', '/nonexistent/experiment'])",
    "from raysearch.cli import main; main(['analyze', '/nonexistent/experiment', '--out', '/nonexistent/out'])",
])
def test_config_spaces_analysis_status_and_analyze_start_without_torch_or_ray(code):
    check = f"{code}\nimport sys\nprint(sorted(m for m in ('torch', 'ray', 'transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", check], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout + out.stderr


def test_every_method_heading_the_code_cites_exists():
    import re

    headings = [line[3:] for line in (ROOT / "docs" / "METHOD.md").read_text().splitlines() if line.startswith("## ")]
    cite = re.compile(r'METHOD\.md,?\s*\(?\\?"([^"\\]+)\\?"(?:\s+and\s+\\?"([^"\\]+)\\?")?')
    cited = {(path.relative_to(ROOT).as_posix(), name) for path in source_files() for match in cite.finditer(path.read_text())
             for name in match.groups() if name}
    assert len(cited) >= 8  # the citations are found at all
    missing = [f"{path}: {name!r}" for path, name in sorted(cited) if not any(h.startswith(name) for h in headings)]
    assert not missing, "cited METHOD.md headings that do not exist:\n" + "\n".join(missing)


def test_a_coupling_mode_is_named_only_in_the_vocabulary_and_its_own_class():
    """Adding a coupling mode touches raysearch/config.py (COUPLING_MODES), its class in raysearch/transfer/coupling.py,
    docs/METHOD.md and the spaces that search it: no other code names a mode (they ask TransferConfig.coupled, the
    trial frame's `coupled` and `coupling_strength` columns, or UNCOUPLED)."""
    import re

    from raysearch.config import COUPLING_MODES
    from raysearch.transfer.coupling import COUPLINGS

    assert set(COUPLINGS) == set(COUPLING_MODES)
    owners = {"raysearch/config.py", "raysearch/transfer/coupling.py"}
    named = re.compile("[\"'](" + "|".join(COUPLING_MODES) + ")[\"']")
    files = [*source_files(), *sorted((ROOT / "experiments").glob("*.py"))]
    found = [f"{p.relative_to(ROOT)}:{n}" for p in files if p.relative_to(ROOT).as_posix() not in owners
             for n, line in enumerate(p.read_text().splitlines(), 1) if named.search(line)]
    assert not found, "coupling modes named outside their owners:\n" + "\n".join(found)
