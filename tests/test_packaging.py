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


def _run_python(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    return done.stdout.strip()


def test_mdpo_help_and_import_mdpo_import_no_torch():
    """``mdpo --help`` and ``import mdpo`` stay light (issue 20, finding 6): only the module
    of the command being run is imported, and ``mdpo.PPO`` imports its family on first use."""
    heavy = ("torch", "numpy", "gymnasium", "h5py", "yaml", "scipy")
    code = (
        "import sys, contextlib, io\n"
        "import mdpo\n"
        "from mdpo.cli.main import main\n"
        "for argv in (['--help'], ['--version']):\n"
        "    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        "        main(argv)\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {heavy!r}))\n"
        "print(mdpo.PPO.__module__, 'torch' in sys.modules)\n"
    )
    light, lazy = _run_python(code).splitlines()
    assert light == "[]"
    assert lazy == "mdpo.rl.ppo True"


def test_the_registry_imports_every_algorithm_on_first_read():
    """Loading a file names its algorithm: the registry finds it whichever modules were
    imported before (here only the core), in the declared order."""
    out = _run_python(
        "from mdpo.core.registry import ALGORITHMS, RL_ALGORITHMS\n"
        "print(list(ALGORITHMS)); print(list(RL_ALGORITHMS))\n"
        "print(ALGORITHMS['SAC'].__module__)"
    )
    assert out.splitlines() == [
        "['PPO', 'TRPO', 'MDPO', 'SAC', 'OffPolicyMDPO', 'BC', 'OPPO', 'TSDDR']",
        "['PPO', 'TRPO', 'MDPO', 'SAC', 'OffPolicyMDPO']",
        "mdpo.rl.sac",
    ]


def test_an_undeclared_algorithm_is_refused():
    from mdpo.core.registry import register_algorithm

    class Stray:
        algo_name = "Stray"

    with pytest.raises(ValueError, match="not declared in HOMES"):
        register_algorithm(Stray)


def test_code_version_says_dirty_when_the_package_is_modified(tmp_path):
    """``code_version`` (written into every benchmark result) reports ``-dirty`` when a file
    of the package differs from the commit, and not otherwise. Checked on a copy of
    ``mdpo/core/utils.py`` in a repository of its own, laid out as this one."""
    import importlib.util
    import shutil
    import subprocess

    import mdpo.core.utils

    core = tmp_path / "mdpo" / "core"
    core.mkdir(parents=True)
    shutil.copy(mdpo.core.utils.__file__, core / "utils.py")
    (tmp_path / "README.md").write_text("outside the package\n")

    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x")
    spec = importlib.util.spec_from_file_location("copied_utils", core / "utils.py")
    copied = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(copied)
    assert not copied.code_version().endswith("-dirty")
    (tmp_path / "README.md").write_text("changed, but outside the package\n")
    assert not copied.code_version().endswith("-dirty")
    (core / "utils.py").write_text((core / "utils.py").read_text() + "\n# changed\n")
    assert copied.code_version().endswith("-dirty")
