"""The feature store (compatibility name): everything lives in :mod:`locvtp.featurestore`.

``locvtp.features`` was the reader's module; it now re-exports the package (reader, writers and the
:class:`~locvtp.featurestore.record.ClipFeatures` record), so ``from locvtp.features import iter_features``
keeps working.
"""
from locvtp.featurestore import *  # noqa: F401,F403
from locvtp.featurestore import __all__  # noqa: F401
from locvtp.featurestore.reader import _decode_attr, _default_windows, _h5_dataset, _npz_shape  # noqa: F401
