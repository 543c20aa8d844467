"""Environments of the suite.

For now: small environments with known dynamics used by the tests (``envs.toy``). The
hydrothermal dispatch model and the torch-native batched classic-control envs come later.
"""
