"""The GitHub Actions gate (.github/workflows): valid for actionlint, and it runs only what the README documents."""
import re
import shutil
import subprocess
from pathlib import Path

import yaml

from harness import config

WORKFLOWS = sorted((config.REPO / ".github" / "workflows").glob("*.yml"))


def actionlint() -> str:
    found = shutil.which("actionlint") or shutil.which("actionlint", path=str(Path.home() / "go" / "bin"))
    assert found, "actionlint is not installed: scripts/setup installs it (ACTIONLINT_VERSION in images/versions.env)"
    return found


def test_there_is_a_workflow():
    assert WORKFLOWS, "no workflow under .github/workflows"


def test_actionlint_accepts_every_workflow():
    res = subprocess.run([actionlint(), "-no-color", *map(str, WORKFLOWS)], capture_output=True, text=True,
                         timeout=120, cwd=config.REPO)
    assert res.returncode == 0, f"actionlint found problems:\n{res.stdout}{res.stderr}"


def test_workflow_runs_only_documented_commands():
    readme = (config.REPO / "README.md").read_text()
    for wf in WORKFLOWS:
        for job in yaml.safe_load(wf.read_text())["jobs"].values():
            for step in job["steps"]:
                if "run" not in step:
                    continue
                commands = re.findall(r"(scripts/[\w-]+|python3? -m [\w.]+)", step["run"])
                assert commands, f"{wf.name}: step {step.get('name')!r} runs nothing the README documents"
                for cmd in commands:
                    assert cmd in readme, f"{wf.name}: {cmd!r} is not documented in README.md"


def test_workflow_fails_on_not_run():
    # --skip-unavailable-modes would let a mode that cannot run pass the job.
    for wf in WORKFLOWS:
        assert "--skip-unavailable-modes" not in wf.read_text()
