"""Which fusepy-API binding serves the mount.

mfusepy (the maintained fork, faster, libfuse 2 or 3) when it is installed,
else fusepy (libfuse 2), which is the required dependency. ``LPFS_BINDING``
(``mfusepy`` or ``fusepy``) forces one, so both can be tested.
"""

import importlib
import os
import warnings
from types import ModuleType


def load() -> ModuleType:
    """The binding module; ImportError if the one asked for is missing."""
    wanted = os.environ.get("LPFS_BINDING", "")
    if wanted == "fusepy":
        return importlib.import_module("fuse")
    if wanted == "mfusepy":
        return importlib.import_module("mfusepy")
    try:
        return importlib.import_module("mfusepy")
    except ImportError:
        return importlib.import_module("fuse")


fuse = load()
FUSE = fuse.FUSE
FuseOSError = fuse.FuseOSError
fuse_get_context = fuse.fuse_get_context
NAME = fuse.__name__


def serve(operations: object, mountpoint: str, **options: object) -> None:
    """FUSE() in the foreground until unmounted.

    Operations objects keep a call operator for fusepy, which dispatches
    through it; mfusepy calls their methods directly and would warn about it.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "The call operator", DeprecationWarning)
        FUSE(operations, mountpoint, foreground=True, **options)
