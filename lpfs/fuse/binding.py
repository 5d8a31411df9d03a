"""Which binding serves the mount: lpfs's own FUSE protocol session, or a fusepy-API one.

By default lpfs speaks the kernel's FUSE protocol itself (``session``): no
libfuse and no ctypes callback per request. ``LPFS_BINDING`` picks a
libfuse binding instead: ``mfusepy`` (the maintained fork, libfuse 2 or 3)
or ``fusepy`` (libfuse 2, the required dependency), so all three can be
tested; ``libfuse`` means mfusepy when installed, else fusepy. All three
have fusepy's interface: ``FUSE``, ``FuseOSError``, ``fuse_get_context``.
"""

import importlib
import os
import warnings
from types import ModuleType


def load(wanted: str) -> ModuleType:
    """The binding module; ImportError if the one asked for is missing."""
    if wanted in ("", "native"):
        return importlib.import_module("lpfs.fuse.session")
    if wanted == "fusepy":
        return importlib.import_module("fuse")
    if wanted == "mfusepy":
        return importlib.import_module("mfusepy")
    if wanted == "libfuse":
        try:
            return importlib.import_module("mfusepy")
        except ImportError:
            return importlib.import_module("fuse")
    raise ImportError(f"LPFS_BINDING={wanted!r}: expected native, libfuse, mfusepy or fusepy")


fuse = load(os.environ.get("LPFS_BINDING", ""))
FUSE = fuse.FUSE
FuseOSError = fuse.FuseOSError
fuse_get_context = fuse.fuse_get_context
NAME = fuse.__name__


def serve(operations: object, mountpoint: str, threaded: bool = False, **options: object) -> None:
    """FUSE() in the foreground until unmounted.

    ``threaded`` asks for libfuse's multithreaded loop, so it takes a libfuse
    binding even where the native session would serve. Operations objects
    keep a call operator for fusepy, which dispatches through it; mfusepy
    calls their methods directly and would warn about it.
    """
    module = load("libfuse") if threaded and fuse.__name__ == "lpfs.fuse.session" else fuse
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "The call operator", DeprecationWarning)
        module.FUSE(operations, mountpoint, foreground=True, nothreads=not threaded, **options)
