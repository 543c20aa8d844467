"""The installed package: a regular (non-editable) wheel imports from anywhere, even from a
folder that holds an unrelated ``envs/`` package (RL projects often have one), because the
repository folder ``envs/`` is installed as ``mdpo.envs`` and nothing is installed as ``envs``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """A wheel built from a copy of the sources (the build leaves nothing in the checkout)."""
    source = tmp_path_factory.mktemp("source")
    for name in ("mdpo",):
        shutil.copytree(
            os.path.join(ROOT, name), source / name, ignore=shutil.ignore_patterns("__pycache__")
        )
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(os.path.join(ROOT, name), source / name)
    dist = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(dist),
            str(source),
        ],
        check=True,
        capture_output=True,
    )
    (path,) = dist.glob("mdpo-*.whl")
    return path


def test_the_wheel_installs_nothing_as_envs(wheel):
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
    tops = {name.split("/")[0] for name in names if not name.startswith("mdpo-")}
    assert tops == {"mdpo"}
    assert "mdpo/envs/hydro/data/bolivia/hydro.json" in names  # the case data ships
    assert "mdpo/cli/presets/zoo.yaml" in names  # and the presets


def test_an_installed_mdpo_imports_beside_a_foreign_envs_package(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "-q",
            "--target",
            str(target),
            str(wheel),
        ],
        check=True,
        capture_output=True,
    )
    project = tmp_path / "someone_elses_project"
    (project / "envs").mkdir(parents=True)
    (project / "envs" / "__init__.py").write_text("FOREIGN = True\n")
    script = (
        "import envs, mdpo, mdpo.envs.hydro, gymnasium as gym\n"
        "from mdpo.rl.torch_classic import make_torch_env\n"
        f"assert envs.FOREIGN and mdpo.__file__.startswith({str(target)!r})\n"
        "env = gym.make('HydroDispatch-v0', case='case3', horizon=2)\n"
        "env.reset(seed=0)\n"
        "make_torch_env('CartPole-v1', 4).reset(seed=0)\n"
        "agent = mdpo.PPO('MlpPolicy', 'torch:CartPole-v1', n_envs=4, n_steps=8, batch_size=32)\n"
        "agent.learn(32)\n"
        "print('ok')\n"
    )
    # the venv's site-packages give the dependencies; the target gives mdpo, not the checkout
    env = {**os.environ, "PYTHONPATH": str(target), "MUJOCO_GL": "disable"}
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=project, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]


@pytest.mark.filterwarnings("ignore:mdpo.agents moved:DeprecationWarning")
def test_old_module_paths_still_import_with_a_warning():
    import importlib
    import sys as system

    for old, new in (
        ("mdpo.sb3", "mdpo.interop.sb3"),
        ("mdpo.agents.tsddr", "mdpo.rules.tsddr"),
        ("mdpo.utils", "mdpo.core.utils"),
    ):
        system.modules.pop(old, None)
        with pytest.warns(DeprecationWarning, match=f"{old} moved to {new}"):
            module = importlib.import_module(old)
        assert module is importlib.import_module(new)
    from mdpo.agents import PPO  # the old package of the agents

    assert PPO is importlib.import_module("mdpo").PPO
