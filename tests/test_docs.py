"""The documentation stays true: a short README, a design card that names only what exists,
links that resolve, the quickstart equal to its example, no absolute paths of a machine."""

from __future__ import annotations

import ast
import importlib
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DESIGN = REPO / "docs" / "DESIGN.md"
DOCS = ("docs/DESIGN.md", "docs/RESULTS.md", "docs/BENCHMARKS.md", "research/README.md")
#: Folders whose committed files must not hold absolute paths of this machine.
NO_ABSOLUTE_PATHS = ("reports", "research/results", "docs")
#: An absolute path of this machine: ``/work/...``, ``/root/...``, ``/tmp/...``, ``/home/...``
#: not preceded by a path character (so ``reports/reproduce/work/runs`` is fine).
ABSOLUTE_PATH = re.compile(r"(?<![\w.~/-])/(?:work|root|tmp|home)/")
#: Dotted module paths of the three packages (optionally ending in attributes).
DOTTED = re.compile(r"(?<![\w./-])((?:rlaif_gym|rewards|agents)(?:\.[A-Za-z_]\w*)+)")
#: Repository file paths (a file or a folder; ``*`` globs allowed).
FILE_PATH = re.compile(
    r"(?<![\w-])((?:rlaif_gym|rewards|agents|research|benchmarks|examples|docs|tests)/[\w.*/-]*)")


def committed_files(*folders: str) -> list[Path]:
    """The files git tracks under ``folders`` (every file there when git is unavailable)."""
    try:
        out = subprocess.run(["git", "ls-files", "-z", "--", *folders], cwd=REPO, check=True,
                             capture_output=True, text=True).stdout
        return [REPO / name for name in out.split("\0") if name]
    except (OSError, subprocess.CalledProcessError):
        return [p for folder in folders for p in (REPO / folder).rglob("*") if p.is_file()]


def resolve_dotted(path: str) -> object:
    """Import the longest importable module prefix of ``path``, then get the attributes."""
    parts = path.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj: object = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for name in parts[cut:]:
            obj = getattr(obj, name)  # AttributeError: the doc names what does not exist
        return obj
    raise ModuleNotFoundError(path)


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def test_readme_has_at_most_200_lines():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines; move detail to docs/"


@pytest.mark.parametrize("doc", DOCS)
def test_the_docs_exist(doc):
    assert (REPO / doc).is_file(), doc


@pytest.mark.parametrize("doc", (DESIGN, README), ids=("DESIGN", "README"))
def test_docs_name_only_modules_that_exist(doc):
    text = doc.read_text(encoding="utf-8")
    dotted = sorted(set(DOTTED.findall(text)))
    assert len(dotted) > 10  # the docs name modules
    missing = []
    for path in dotted:
        try:
            resolve_dotted(path)
        except (ImportError, AttributeError) as exc:
            missing.append(f"{path} ({type(exc).__name__}: {exc})")
    assert not missing, f"{doc.name} names what does not exist:\n" + "\n".join(missing)


@pytest.mark.parametrize("doc", (DESIGN, README), ids=("DESIGN", "README"))
def test_docs_name_only_files_that_exist(doc):
    text = doc.read_text(encoding="utf-8")
    paths = sorted({p.rstrip(".,") for p in FILE_PATH.findall(text)})
    assert len(paths) > 5
    missing = [p for p in paths if not (any(REPO.glob(p)) if "*" in p else (REPO / p).exists())]
    assert not missing, f"{doc.name} names files that do not exist: {missing}"


def test_design_lists_every_module_of_the_packages():
    text = DESIGN.read_text(encoding="utf-8")
    modules = [p.relative_to(REPO).as_posix() for package in ("rlaif_gym", "rewards", "agents")
               for p in (REPO / package).rglob("*.py")
               if p.name != "__init__.py" or p.parent.name in ("rlaif_gym", "rewards")]
    unlisted = sorted(m for m in modules if f"`{m}`" not in text)
    assert not unlisted, f"modules without a line in docs/DESIGN.md: {unlisted}"


@pytest.mark.parametrize("doc", ("README.md", *DOCS))
def test_relative_links_resolve(doc):
    source = REPO / doc
    text = source.read_text(encoding="utf-8")
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        resolved = (source.parent / path) if path else source
        if not resolved.exists():
            broken.append(target)
            continue
        if anchor and resolved.suffix == ".md":
            headings = re.findall(r"^#+ (.+)$", resolved.read_text(encoding="utf-8"), re.M)
            if anchor not in {github_anchor(h) for h in headings}:
                broken.append(target)
    assert not broken, f"{doc}: broken links {broken}"


def test_readme_quickstart_is_examples_quickstart():
    readme = README.read_text(encoding="utf-8")
    marker = readme.index("<!-- quickstart: examples/quickstart.py")
    block = re.search(r"```python\n(.*?)```", readme[marker:], flags=re.S)
    assert block is not None
    source = (REPO / "examples" / "quickstart.py").read_text(encoding="utf-8")
    docstring = ast.parse(source).body[0]
    assert isinstance(docstring, ast.Expr) and isinstance(docstring.value, ast.Constant)
    body = "\n".join(source.splitlines()[docstring.end_lineno:]).strip() + "\n"
    assert block.group(1) == body, "README quickstart differs from examples/quickstart.py"


def test_readme_lists_every_example():
    readme = README.read_text(encoding="utf-8")
    examples = sorted(p.name for p in (REPO / "examples").glob("*.py"))
    assert examples and all(f"examples/{name}" in readme for name in examples)


def test_no_absolute_paths_of_this_machine_in_committed_records():
    offenders = []
    for path in committed_files(*NO_ABSOLUTE_PATHS):
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, FileNotFoundError):  # images; a file deleted, not committed
            continue
        for number, line in enumerate(text.splitlines(), 1):
            if ABSOLUTE_PATH.search(line):
                offenders.append(f"{path.relative_to(REPO)}:{number}: {line.strip()[:120]}")
    assert not offenders, "absolute paths (write them relative):\n" + "\n".join(offenders[:30])


def test_the_absolute_path_pattern():
    for bad in ("local:/work/shared/data", '"/root/w/rm-ai"', " /tmp/x.log", "(/home/u/x)"):
        assert ABSOLUTE_PATH.search(bad), bad
    for fine in ("reports/reproduce/work/runs/rlaif", "../shared/data", "W/rm-ai", "~/tmp/x"):
        assert not ABSOLUTE_PATH.search(fine), fine
