"""The package's import graph (read from the source, every import including those inside functions): no circle,
no module importing another's private names, and data flowing one way: no stage imports a later one."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "astrodask"

# Lower layers first. A module may import only modules of its own layer or of layers before it. The report's
# library modules (sums, collect, figures, page, provenance, build) describe the outputs of train, predict and
# evaluate; report.stage is the last stage, the ``astrodask report`` command.
LAYERS = (
    ("astrodask.schema",),
    ("astrodask.ingest",),
    ("astrodask.dataset",),
    ("astrodask.features",),
    ("astrodask.model",),
    ("astrodask.metrics", "astrodask.report.sums", "astrodask.report.collect", "astrodask.report.figures",
     "astrodask.report.page", "astrodask.report.provenance", "astrodask.report.build"),
    ("astrodask.learn",),
    ("astrodask.predict",),
    ("astrodask.evaluate",),
    ("astrodask.report.stage",),
    ("astrodask.pipeline",),
    ("astrodask.cli",),
)


def _modules() -> dict[str, Path]:
    out = {}
    for p in ROOT.rglob("*.py"):
        parts = list(p.relative_to(ROOT.parent).with_suffix("").parts)
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    return out


MODULES = _modules()


def _imports(mod: str):
    """(imported module, imported name or None) for every import in ``mod`` that lands in the package."""
    path = MODULES[mod]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from ((a.name, None) for a in node.names if a.name in MODULES)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = mod.split(".")[: None if path.name == "__init__.py" else -1]
                base = base[: len(base) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            for a in node.names:
                full = f"{name}.{a.name}"
                if full in MODULES:
                    yield full, None
                elif name in MODULES:
                    yield name, a.name


def _graph() -> dict[str, set[str]]:
    return {m: {t for t, _ in _imports(m) if t != m} for m in MODULES}


def _layer(mod: str) -> int | None:
    best = None
    for i, layer in enumerate(LAYERS):
        for prefix in layer:
            if (mod == prefix or mod.startswith(prefix + ".")) and (best is None or len(prefix) > best[1]):
                best = (i, len(prefix))
    return None if best is None else best[0]


def test_the_graph_is_read():
    g = _graph()
    assert "astrodask.learn.stage" in g and "astrodask.report.collect" in g["astrodask.learn.stage"]
    assert _layer("astrodask.report.stage") > _layer("astrodask.evaluate") > _layer("astrodask.report.build")


def test_no_import_circle():
    g, state, cycles = _graph(), {}, []

    def visit(u, path):
        state[u] = "open"
        for v in sorted(g[u]):
            if state.get(v) == "open":
                cycles.append(path[path.index(v):] + [v])
            elif v not in state:
                visit(v, path + [v])
        state[u] = "done"

    for m in sorted(g):
        if m not in state:
            visit(m, [m])
    assert cycles == []


def test_no_private_name_is_imported_from_another_module():
    private = [(m, t, n) for m in MODULES for t, n in _imports(m)
               if n and n.startswith("_") and not n.startswith("__") and t != m]
    assert private == []


def test_no_stage_imports_a_later_one():
    upward = [(m, t) for m, targets in _graph().items() for t in targets
              if _layer(m) is not None and _layer(t) is not None and _layer(t) > _layer(m)]
    assert upward == []


def test_the_report_stage_is_not_loaded_by_the_stages_that_write_reports():
    import subprocess
    import sys

    code = ("import sys, astrodask.learn.stage, astrodask.predict, astrodask.evaluate; "
            "print('astrodask.report.stage' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.stdout.strip() == "False", r.stderr
