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


def run_as_a_user(args: list[str], folder, **env: str) -> subprocess.CompletedProcess:
    """``args`` in ``folder`` with this environment's ``mdpo`` first on the PATH, one torch
    thread and no MuJoCo rendering."""
    bin_dir = os.path.dirname(sys.executable)
    env = {
        **os.environ,
        "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
        "MUJOCO_GL": "disable",
        "OMP_NUM_THREADS": "1",
        **env,
    }
    return subprocess.run(args, cwd=folder, env=env, capture_output=True, text=True, timeout=600)


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
    result = run_as_a_user([sys.executable, str(script)], tmp_path)
    assert result.returncode == 0, f"block {index}:\n{code}\n{result.stderr[-3000:]}"


#: (pattern, replacement) per shell block, keyed by a phrase of the block: budgets (steps,
#: episodes, trials, scenarios, workers) only, nothing else changes; a line that cannot run in
#: a test becomes a comment that says why
SHRINK_SHELL = {
    "pip install": [
        # .ci/run (and tools/fresh-check) run the install line; its training runs here
        (r"python3 -m venv .*?&& mdpo", "mdpo"),
        (r"--steps 20000", "--steps 512 --no-progress"),
    ],
    "python -m pytest -q": [(r"python -m pytest -q", ": this very suite")],
    "--preset zoo --out runs/cartpole": [
        (r"--preset zoo", "--preset zoo -n 256 --eval-freq 128 --no-progress"),
        (r"--trials 10 --steps 20000", "--trials 2 --steps 256 --eval-every 128 --no-progress"),
        (r"--episodes 10", "--episodes 2"),
    ],
    "mdpo --help": [
        (r"--steps 150000", "--steps 512 --no-progress"),
        (r"--steps 20000", "--steps 300 --set learning_starts=100 --no-progress"),
        (r"--episodes 20", "--episodes 2"),
        (r"--preset zoo", "--preset zoo -n 256 --no-progress --eval-episodes 1"),
        (r"--trials 20 --steps 50000", "--trials 2 --steps 256 --eval-every 128 --no-progress"),
    ],
    "torch:CartPole-v1": [
        (r"--n-envs 1024", "--n-envs 64"),
        (r"batch_size=4096", "batch_size=256 --steps 1024 --no-progress"),
    ],
    "mdpo sweep run": [(r"--workers \d+", "--workers 1")],
    "mdpo data make": [
        (
            r"--teacher-seed 2",
            "--teacher-seed 2 --teacher-steps 1024 --teacher-eval-every 256"
            " --reference-episodes 2 --no-progress",
        ),
        (r"(data make .*?)--steps \d+", r"\1--steps 200"),
        (
            r"oppo train (.*?)--steps 100000",
            r"oppo train \1--steps 4 --eval-every 2 --eval-episodes 1"
            " --no-progress",
        ),
        (r"--episodes 10", "--episodes 2"),
    ],
    "bolivia_dc/bound": [
        (r"--case bolivia", "--case case3 --scenarios 3 --no-progress"),
        (r"--horizon 126 --report 96", "--horizon 126 --report 96 --iterations 3"),
        (r"--steps 2000", "--steps 4 --eval-freq 2 --eval-scenarios 2"),
    ],
    "bolivia_ac/bound": [
        (r"--case bolivia", "--case case3 --scenarios 2 --no-progress"),
        (r"--horizon 126 --report 96", "--horizon 126 --report 96 --iterations 1"),
        (r"--steps 100 --workers 2", "--steps 1 --workers 1 --eval-freq 0"),
    ],
    "tensorboard --logdir": [(r"tensorboard --logdir", "tensorboard --inspect --logdir")],
}

#: what a prepared folder holds before the blocks run: a sweep spec of the same shape as the
#: committed one, at a tiny budget
TINY_SPEC = """name: ppo_mujoco
budget: 256
seeds: [0]
envs: [Hopper-v5]
algorithms: [PPO, sb3:PPO]
hyperparameters: {list: [{n_steps: 128, batch_size: 64, n_epochs: 1}]}
eval: {every: 128, episodes: 1}
device: cpu
"""


def shell_blocks() -> list[str]:
    with open(os.path.join(ROOT, "README.md")) as handle:
        return re.findall(r"```bash\n(.*?)```", handle.read(), flags=re.S)


def shrink_shell(block: str) -> str:
    keys = [key for key in SHRINK_SHELL if key in block]
    assert len(keys) == 1, f"a README shell block needs one entry in SHRINK_SHELL:\n{block}"
    for pattern, replacement in SHRINK_SHELL[keys[0]]:
        block = re.sub(pattern, replacement, block)
    return block


@pytest.fixture(scope="module")
def user_folder(tmp_path_factory):
    """One folder for every block, as a user following the README top to bottom has."""
    folder = tmp_path_factory.mktemp("user")
    (folder / "benchmarks/sweeps").mkdir(parents=True)
    (folder / "benchmarks/sweeps/ppo_mujoco.yaml").write_text(TINY_SPEC)
    return folder


@pytest.mark.parametrize("index", range(len(shell_blocks())))
def test_readme_shell_block_runs(index, user_folder):
    """Each shell block, shrunk, runs in bash with ``set -e`` (the blocks share the folder and
    run in the README's order: later ones use the runs of earlier ones)."""
    block = shrink_shell(shell_blocks()[index])
    result = run_as_a_user(
        ["bash", "-euo", "pipefail", "-c", block],
        user_folder,
        MINARI_DATASETS_PATH=str(user_folder / "datasets"),
        # `mdpo enjoy` opens its window on SDL's dummy display
        DISPLAY=os.environ.get("DISPLAY", ":mdpo-test"),
        SDL_VIDEODRIVER="dummy",
    )
    assert result.returncode == 0, f"{block}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"


def test_readme_first_ten_minutes_leave_their_files(user_folder):
    """The first-ten-minutes block ran (above) and left what it promises."""
    text = open(os.path.join(ROOT, "README.md")).read()
    section = text[text.index("## Your first ten minutes") :]
    block = re.search(r"```bash\n(.*?)```", section, flags=re.S).group(1)
    commands = [line.split("  #")[0].strip() for line in block.splitlines() if line.strip()]
    assert [c.split()[1] for c in commands] == ["train", "eval", "record", "plot", "tune"]
    assert (user_folder / "cartpole.png").exists()
    assert (user_folder / "tune/cartpole/best.yaml").exists()
    assert list((user_folder / "videos").glob("*.mp4"))
