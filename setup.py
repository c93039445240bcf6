"""Packaging hook: ships the repository's ``conf/`` as package data of ``eval``, installed as ``eval/_conf``.

pyproject.toml holds the metadata and explains the mapping; eval/config_path.py finds the folder at run time.
Every folder of conf/ is a data-only package (``eval._conf``, ``eval._conf.dataset``, ...) so that setuptools
ships its YAML files without warning about undeclared packages. ``eval.data`` ships its ``pinned_files.json``
(the pinned downloads' checksums, read by eval/data/download.py).
"""

from setuptools import find_namespace_packages, find_packages, setup

CONF_PACKAGES = ["eval._conf", *(f"eval._conf.{name}" for name in find_namespace_packages(where="conf"))]

setup(
    packages=[*find_packages(include=["diffseg*", "eval*"]), *CONF_PACKAGES],
    package_dir={"eval._conf": "conf"},
    package_data={**{name: ["*.yaml"] for name in CONF_PACKAGES}, "eval.data": ["pinned_files.json"]},
)
