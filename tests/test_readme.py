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


#: budgets of the first-ten-minutes commands, shrunk
SHRINK_SHELL = [
    (r"--preset zoo", "--preset zoo -n 256 --eval-freq 128 --no-progress"),
    (r"--trials 10 --steps 20000", "--trials 2 --steps 256 --eval-every 128 --no-progress"),
    (r"--episodes 10", "--episodes 2"),
]


def test_readme_first_ten_minutes_run(tmp_path):
    with open(os.path.join(ROOT, "README.md")) as handle:
        text = handle.read()
    section = text[text.index("## Your first ten minutes") :]
    block = re.search(r"```bash\n(.*?)```", section, flags=re.S).group(1)
    commands = [line.split("  #")[0].strip() for line in block.splitlines() if line.strip()]
    assert [c.split()[1] for c in commands] == ["train", "eval", "record", "plot", "tune"]
    env = {**os.environ, "MUJOCO_GL": "disable", "OMP_NUM_THREADS": "1"}
    for command in commands:
        for pattern, replacement in SHRINK_SHELL:
            command = re.sub(pattern, replacement, command)
        args = [sys.executable, "-m", "mdpo", *command.split()[1:]]
        result = subprocess.run(
            args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
        )
        assert result.returncode == 0, f"{command}\n{result.stderr[-2000:]}"
    assert (tmp_path / "cartpole.png").exists() and (tmp_path / "tune/cartpole/best.yaml").exists()
    assert list((tmp_path / "videos").glob("*.mp4"))
