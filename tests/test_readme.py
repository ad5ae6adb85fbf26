"""The README's quick start runs as pasted."""

import os
import re

from tests.conftest import REPO_ROOT


def test_quick_start_runs(tmp_path, monkeypatch):
    with open(os.path.join(REPO_ROOT, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    code = "\n".join(re.findall(r"```python\n(.*?)```", section, re.S))
    assert "model.save" in code and "trace_gates" in code
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(code, "README.md#quick-start", "exec"), namespace)
    assert (tmp_path / "model.keras").exists()
    assert namespace["gates"]["STM"].shape == (1, 30, 32)
