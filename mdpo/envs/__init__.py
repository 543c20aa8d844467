"""Environments of the suite, installed as ``mdpo.envs`` (this repository folder is ``envs/``).

``mdpo.rl.torch_classic``: torch-native batched CartPole, Pendulum, MountainCarContinuous and
Acrobot (``env="torch:<id>"`` for the agents).
``mdpo.envs.hydro``: the hydrothermal dispatch model of the Bolivian system and its gymnasium env.
"""
