"""The feature store: per-video clip features on disk (HDF5, npy-dir, npz-dir), read and written in one place.

* :mod:`~locvtp.featurestore.record`: :class:`ClipFeatures`, the one record of one video's clip vectors;
* :mod:`~locvtp.featurestore.reader`: ``detect_format``, ``feature_info``, ``iter_features``, ``read_features``,
  ``check_finite``, ``safe_name`` (every consumer: ``ground``, ``index``, the evaluation, pre-training);
* :mod:`~locvtp.featurestore.writer`: ``H5Writer``, ``DirWriter`` (crash-safe, resumable), the ownership rules
  of an output (``own_h5_attrs``, ``check_dir_output``, ``discard_h5_output``, ``discard_dir_output``, the claims
  log) and ``merge_shards``.

Why a package and not one file: reader and writers together are ~850 lines, past what one module should hold;
the reader is what almost everyone imports, the writers only ``locvtp extract`` / ``merge``.
Library code: it never imports a command module.
"""
from locvtp.featurestore.reader import (  # noqa: F401
    FeatureError, MissingVideoError, check_finite, detect_format, feature_info, iter_features,
    read_features, safe_name,
)
from locvtp.featurestore.record import ClipFeatures  # noqa: F401
from locvtp.featurestore.writer import (  # noqa: F401
    CLAIMS, FEATURE_FORMAT, FEATURE_VERSION, FORMATS, MANIFEST_LOCK, SETTING_KEYS, DirWriter, ExtractError, H5Writer,
    check_dir_output, discard_dir_output, discard_h5_output, merge_shards, own_h5_attrs,
)

__all__ = [
    "CLAIMS", "ClipFeatures", "DirWriter", "ExtractError", "FEATURE_FORMAT", "FEATURE_VERSION", "FORMATS",
    "FeatureError", "H5Writer", "MANIFEST_LOCK", "MissingVideoError", "SETTING_KEYS",
    "check_dir_output", "check_finite", "detect_format", "discard_dir_output", "discard_h5_output", "feature_info",
    "iter_features", "merge_shards", "own_h5_attrs", "read_features", "safe_name",
]
