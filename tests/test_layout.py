"""The codebase's shape, held by tests: no import cycles, one owner for run-file names, a docstring
atop every module, and a README file tree that lists every file."""

from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "llmcycle"
# the names of files inside a run directory; only rundir.py may spell them (hub/folder.py names a
# Hugging Face folder's files, which share some of these names but are Hugging Face's layout)
RUN_FILES = ("config.json", "meta.json", "model.safetensors", "optimizer.pt", "state.json", "metrics.jsonl",
             "samples.md", "report.md", "loss.png", "summary.json", "tokenizer_config.json",
             "generation_config.json", "chat_template.jinja", "import.json", "rng.json")
NAME_OWNERS = {"rundir.py", "hub/folder.py"}


def _modules() -> dict[str, Path]:
    out = {}
    for path in SRC.rglob("*.py"):
        parts = path.relative_to(SRC.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _module_level_imports(path: Path, name: str, modules: dict) -> set[str]:
    """llmcycle modules imported at module level (not inside functions) by `path`."""
    tree, found = ast.parse(path.read_text(encoding="utf-8")), set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in tree.body:
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names}
    return {m for m in found if m in modules and m != name}


def test_no_import_cycles_between_modules():
    modules = _modules()
    graph = {name: _module_level_imports(path, name, modules) for name, path in modules.items()}
    state, cycles = {}, []

    def visit(node, stack):
        state[node] = "open"
        for dep in sorted(graph[node]):
            if state.get(dep) == "open":
                cycles.append(stack[stack.index(dep):] + [dep])
            elif dep not in state:
                visit(dep, stack + [dep])
        state[node] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    # a package's __init__ importing its own submodules is not a cycle of meaning; anything else is
    real = [c for c in cycles if not all(m.startswith(c[0] + ".") or m == c[0] for m in c)]
    assert not real, f"import cycles: {real}"


def test_only_rundir_spells_run_file_names():
    offenders = []
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC).as_posix()
        if rel in NAME_OWNERS:
            continue
        text = path.read_text(encoding="utf-8")
        offenders += [f"{rel}: {name}" for name in RUN_FILES if f'"{name}"' in text or f"'{name}'" in text]
    assert not offenders, offenders


def test_every_module_opens_with_a_docstring():
    missing = [p.relative_to(ROOT).as_posix() for p in SRC.rglob("*.py")
               if not ast.get_docstring(ast.parse(p.read_text(encoding="utf-8")))]
    assert not missing, missing


def test_readme_file_tree_lists_every_tracked_file_once():
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    if not tracked:  # not a git checkout (e.g. an sdist): nothing to compare with
        return
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    tree = re.search(r"## Files\n+```\n(.*?)```", readme, re.S).group(1)
    listed = [line.split()[0] for line in tree.splitlines() if line.strip()]
    wanted = [f for f in tracked if f.endswith((".py", ".sh", ".md", ".toml", ".txt", ".html", ".js"))
              and not f.startswith(("tests/", "docs/results/")) or f == ".ci/run"]
    assert sorted(set(wanted) - set(listed)) == [], "files missing from the README tree"
    assert sorted(set(listed) - set(tracked)) == [], "README tree lists files that do not exist"
    assert len(listed) == len(set(listed)), "a file is listed twice"
