"""The pytest plugin's public names, where the README documents them.

The plugin itself is ``lpfs.testing.plugin``, registered as ``lpfs``.
"""

from lpfs.testing.plugin import (
    LpfsCommandError,
    LpfsFactory,
    LpfsMount,
    lpfs_command,
    mounted,
    umount,
)

__all__ = ["LpfsCommandError", "LpfsFactory", "LpfsMount", "lpfs_command", "mounted", "umount"]
