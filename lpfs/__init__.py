"""lpfs: the Linux kernel's livepatch sysfs interface, emulated over FUSE.

Packages, from the bottom up (docs/architecture.md): ``errors``; ``kernel``
(the model of the livepatch core: patches, modules, tasks, the transition,
the log); ``formats`` (module and scenario files read into kernel
definitions); ``sysfs`` (the attribute tree); ``fuse`` (the FUSE protocol
over /dev/fuse and the libfuse bindings, knowing nothing of livepatch);
``daemon`` (the adapters that serve the tree and the ``lpfs ns`` files over
FUSE, and the control server); ``control`` (the control protocol and its
client); ``tools`` (the ``lpfs`` command and the kmod stand-ins); ``testing``
(the pytest plugin).
"""

__version__ = "0.1.0"
