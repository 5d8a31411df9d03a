"""lpfs: the Linux kernel's livepatch sysfs interface, emulated over FUSE.

Layers, from the bottom up: ``klog`` (kernel log ring), ``tasks`` (where tasks
come from), ``transition`` (the per-task consistency model), ``core`` (patches,
modules and their lifecycle under one lock), ``sysfs`` (the attribute tree as
data), ``fs`` (the thin FUSE adapter) on ``fuseproto`` (the FUSE protocol
over /dev/fuse), ``control_server`` (the daemon's end of the control socket),
``control`` and ``cli`` (the ``lpfs`` command talking to a running daemon).
"""

__version__ = "0.1.0"
