"""The README's Python example runs as written (shortened to two epochs)."""

from __future__ import annotations

import re

import pytest


@pytest.mark.slow
def test_readme_hook_example_runs(repo, monkeypatch):
    text = (repo / "README.md").read_text()
    code = re.findall(r"```python\n(.*?)```", text, re.S)[0]
    assert "training.epochs=5" in code
    monkeypatch.chdir(repo)
    namespace: dict = {"print": lambda *a, **k: None}
    exec(compile(code.replace("training.epochs=5", "training.epochs=2"), "README.md", "exec"), namespace)
    series = namespace["run"].record.series("weight_absmax", "dense1")
    assert len(series) == namespace["run"].trainer.step and (series > 0).all()


def test_readme_shows_the_two_commands(repo):
    text = (repo / "README.md").read_text()
    assert "studies/init_vs_optimizer.py --quick" in text
    assert ".venv/bin/python -m pytest -q" in text and ".venv/bin/python -m pytest -q" in (repo / ".ci/run").read_text()
