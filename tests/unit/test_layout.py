"""How the one-engine rule is checked: outside harness/engine and harness/guest no module imports
the guest, compares engine kinds or places, or names an engine class, except the --byo-kubeconfig path,
whose kind nodes (if any) run on this machine's own Docker engine by definition."""
import ast
from pathlib import Path

HARNESS = Path(__file__).resolve().parents[2] / "harness"
ENGINE_PACKAGES = ("engine", "guest")
HOST_ENGINE_ALLOWED = {"byo/attach.py", "byo/testbed.py", "plugin.py"}  # --byo-kubeconfig only


def _modules():
    for path in sorted(HARNESS.rglob("*.py")):
        rel = path.relative_to(HARNESS).as_posix()
        if rel.split("/")[0] not in ENGINE_PACKAGES:
            yield rel, ast.parse(path.read_text())


def test_no_module_outside_the_engine_branches_on_which_engine():
    found = []
    for rel, tree in _modules():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and (
                    node.module.startswith("guest") or ".guest" in node.module or node.module == "harness.guest"):
                found.append(f"{rel}:{node.lineno} imports {node.module}")
            if isinstance(node, ast.Compare):
                names = [n.attr for n in ast.walk(node) if isinstance(n, ast.Attribute)]
                consts = [n.value for n in ast.walk(node) if isinstance(n, ast.Constant)]
                if ({"kind", "where"} & set(names)) and ({"guest", "host"} & set(consts)):
                    found.append(f"{rel}:{node.lineno} compares an engine's kind/place")
            if isinstance(node, ast.Name) and node.id == "GuestEngine":
                found.append(f"{rel}:{node.lineno} names GuestEngine")
            if isinstance(node, ast.Attribute) and node.attr == "HostEngine" and rel not in HOST_ENGINE_ALLOWED:
                found.append(f"{rel}:{node.lineno} names HostEngine")
    assert found == []


def test_only_waits_reads_the_users_slowdown_alone():
    """A timeout scaled by config.slowdown() misses the engine's factor (the guest's 3x): seen as a
    120 s rollout timeout on a guest cluster. Every timeout goes through harness.waits."""
    found = [f"{rel}:{node.lineno}" for rel, tree in _modules() if rel != "waits.py"
             for node in ast.walk(tree)
             if isinstance(node, ast.Attribute) and node.attr == "slowdown"
             and isinstance(node.value, ast.Name) and node.value.id == "config"]
    assert found == []
