"""Environments of the suite.

``envs.toy``: small environments with known dynamics used by the tests.
``envs.torch_classic``: torch-native batched CartPole, Pendulum, MountainCarContinuous and
Acrobot (``env="torch:<id>"`` for the agents).
``envs.hydro``: the hydrothermal dispatch model of the Bolivian system and its gymnasium env.
"""
