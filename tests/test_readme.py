"""README's commands stay true: .ci/run runs the README's test command verbatim."""
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ci_runs_the_readme_test_command():
    ci_line = [l for l in (ROOT / ".ci/run").read_text().splitlines() if l.startswith("python3 -m venv")][0]
    assert ci_line in (ROOT / "README.md").read_text()


def test_readme_demo_command_installs_and_runs_demo():
    readme = (ROOT / "README.md").read_text()
    assert "pip install -q -c constraints.txt -e . && smartcompile demo" in readme
