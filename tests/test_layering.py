"""Imports point one way: core (rlaif_gym) <- rewards <- agents <- pipelines and CLI.

Every module of the three packages is read with ``ast``, imports inside functions included,
and each import of a project module is an arrow. An arrow may point to the same layer or to a
lower one, never to a higher one, and the module graph has no cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("rlaif_gym", "rewards", "agents")
#: Layer of a module: the first matching prefix wins; lower numbers are lower layers.
LAYERS: tuple[tuple[str, int, str], ...] = (
    ("rlaif_gym.pipelines", 3, "pipelines"),
    ("rlaif_gym.cli", 3, "CLI"),
    ("agents", 2, "agents"),
    ("rewards", 1, "rewards"),
    ("rlaif_gym", 0, "core"),
)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for package in PACKAGES for p in (REPO / package).rglob("*.py")}


def layer(name: str) -> tuple[int, str]:
    for prefix, number, title in LAYERS:
        if name == prefix or name.startswith(prefix + "."):
            return number, title
    raise AssertionError(f"{name} is in no layer")


def _type_only_nodes(tree: ast.AST) -> set[int]:
    """ids of the import nodes inside ``if TYPE_CHECKING:`` blocks (never executed)."""
    found: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            found.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return found


def imports(name: str, path: Path, known: set[str], *, type_only: bool = True) -> set[str]:
    """The project modules ``name`` imports (module level and inside functions; with
    ``type_only=False`` without the ``if TYPE_CHECKING:`` imports, which never run)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    skip = set() if type_only else _type_only_nodes(tree)
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1]
                                + ([base] if base else []))
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:  # "a.b.c" -> the module "a.b"
                target = target.rpartition(".")[0]
            if target and target != name and target.split(".")[0] in PACKAGES:
                found.add(target)
    return found


def graph(*, type_only: bool = True) -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {name: imports(name, path, known, type_only=type_only)
            for name, path in mods.items()}


def test_every_module_belongs_to_a_layer():
    for name in modules():
        layer(name)


def test_no_import_points_to_a_higher_layer():
    upward = []
    for name, targets in graph().items():
        mine, my_title = layer(name)
        for target in sorted(targets):
            theirs, title = layer(target)
            if theirs > mine:
                upward.append(f"{name} ({my_title}) imports {target} ({title})")
    assert not upward, "imports that point up:\n" + "\n".join(upward)


def test_the_core_names_rewards_only_by_lazy_entry_point_strings():
    core = [n for n in modules() if layer(n)[0] == 0]
    g = graph()
    assert all(not any(t.startswith(("rewards", "agents")) for t in g[n]) for n in core)
    from rlaif_gym.reward_registry import REWARD_REGISTRY

    assert REWARD_REGISTRY["direct"].entry_point == "rewards.direct:DirectReward"


def _cycle(g: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the directed graph ``g`` as a list of modules, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(g.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(g):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_module_graph_has_no_cycle():
    g = graph(type_only=False)  # an annotation naming a module is no import at run time
    # a package's __init__ re-exporting its own submodules is not a cycle of ideas
    for name in g:
        if (REPO / Path(*name.split(".")) / "__init__.py").is_file():
            g[name] = {t for t in g[name] if not t.startswith(name + ".")}
    cycle = _cycle(g)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


@pytest.mark.parametrize("bad, expected", [
    ("from rewards.direct import DirectReward", "rewards.direct"),
    ("import agents.train", "agents.train"),
    ("from . import text_env", "rlaif_gym.envs.text_env"),
])
def test_the_import_reader_sees_every_form(tmp_path, bad, expected):
    fake = tmp_path / "probe.py"
    fake.write_text(f"def f():\n    {bad}\n")
    # relative imports resolve against the package of the module name given
    assert expected in imports("rlaif_gym.envs.probe", fake, set(modules()))
