"""Every Python block of the README runs as written, at a tiny budget: the budgets (steps,
episodes, envs, horizons) are shrunk by the substitutions below, nothing else is changed."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: (pattern, replacement): budgets only
SHRINK = [
    (r"\.learn\(\s*[\d_]+", ".learn(64"),
    (r"n_eval_episodes=\d+", "n_eval_episodes=2"),
    (r"n_envs=1024", "n_envs=8"),
    (r"batch_size=4096", "batch_size=128"),
    (r"n_envs=16\)", "n_envs=2, learning_starts=16, batch_size=16)"),
    (r"horizon=96", "horizon=4"),
    (r"sample_noise\(100", "sample_noise(2"),
    (r'HydroProblem\("bolivia"', 'HydroProblem("case3"'),
    (r"workers=2", "workers=1"),
]


def python_blocks() -> list[str]:
    with open(os.path.join(ROOT, "README.md")) as handle:
        text = handle.read()
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def shrink(code: str) -> str:
    for pattern, replacement in SHRINK:
        code = re.sub(pattern, replacement, code)
    return code


@pytest.mark.parametrize("index", range(len(python_blocks())))
def test_readme_python_block_runs(index, tmp_path):
    code = shrink(python_blocks()[index])
    script = tmp_path / "block.py"
    script.write_text(code)
    env = {**os.environ, "MUJOCO_GL": "disable", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"block {index}:\n{code}\n{result.stderr[-3000:]}"
