"""Interoperability: Stable-Baselines3 import and export (:mod:`mdpo.interop.sb3`) and the
pickle reader that never unpickles (:mod:`mdpo.interop.safe_pickle`)."""
