"""Test scaffolding, not the method: tiny seeded models, the original-layout checkpoint writer and
synthetic features with known clusters (as ``diffusers.utils.testing_utils``).

``tiny`` builds random-weight models of every family (``model=tiny`` uses it), ``ldm_checkpoint``
writes one of them as an original-layout single file, ``features`` makes DiffCut-shaped feature
maps with known clusters (tests and ``python -m eval.bench.diffcut``).
"""
