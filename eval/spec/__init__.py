"""The typed, frozen run spec (:mod:`eval.spec.types`), built and validated from the composed config by
:func:`eval.spec.build.build_spec`."""

from eval.spec.build import SettingError, as_spec, build_spec
from eval.spec.types import (
    CacheSpec,
    DataSpec,
    FeaturePass,
    MethodSpec,
    ModelSpec,
    ProtocolSpec,
    RunOptions,
    RunSpec,
)

__all__ = ["CacheSpec", "DataSpec", "FeaturePass", "MethodSpec", "ModelSpec", "ProtocolSpec", "RunOptions",
           "RunSpec", "SettingError", "as_spec", "build_spec"]
