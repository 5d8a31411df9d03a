"""The sysfs tree as data: attribute tables resolved against core state.

Sysfs Interface, as the kernel draws it (one row per path):

    /kernel/livepatch/                           the livepatch root, always there
    /kernel/livepatch/<patch>/enabled            0644, the patch's target state
    /kernel/livepatch/<patch>/transition         0444, 1 while in transition
    /kernel/livepatch/<patch>/force              0200, force the transition
    /kernel/livepatch/<patch>/replace            0444, atomic-replace patch
    /kernel/livepatch/<patch>/stack_order        0444, position in klp_patches
    /kernel/livepatch/<patch>/<object>/patched   0444, funcs registered
    /kernel/livepatch/<patch>/<object>/<func,sympos>/
    /kernel/<kobject>/<attr>                     a module's own kobjects, while it is loaded
    /module/<module>/{coresize,initstate,refcnt,taint}, holders/

Nothing here is stored: every lookup derives the node from the core, so a
freed patch is gone at the next lookup. The sysfs rules live here too:
files report PAGE_SIZE, an open against the mode fails with EACCES even for
root, writes are cut to PAGE_SIZE and parsed from their first byte, a read
at offset 0 renders the text afresh, and a handle whose node was removed
answers ENODEV. No FUSE types appear in this module.
"""

import errno
import operator
import os
import stat
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from lpfs.errors import KernelError
from lpfs.kernel import kobjects, params
from lpfs.kernel.core import Core
from lpfs.kernel.kobjects import LIVEPATCH_KOBJECT
from lpfs.kernel.kstrtox import kstrtobool
from lpfs.kernel.profiles import Version
from lpfs.kernel.structs import AttrDef, KlpObject, Module, ParamText, Patch

PAGE_SIZE: Final = 4096
MAX_ATTRIBUTE_NODES: Final = 4096  # attribute nodes kept for their next lookup
Owner = Patch | KlpObject | Module
Show = Callable[[Core, Owner], str]
Store = Callable[[Core, Owner, bytes], None]


@dataclass(frozen=True, slots=True)
class Attr:
    """One sysfs attribute: a name, a mode and its show/store handlers."""

    name: str
    mode: int
    show: Show | None = None
    store: Store | None = None
    since: Version | None = None
    until: Version | None = None


# -- show and store handlers, named as in kernel/livepatch/core.c -------------


def enabled_show(core: Core, patch: Owner) -> str:
    assert isinstance(patch, Patch)
    return f"{int(patch.enabled)}\n"


def enabled_store(core: Core, patch: Owner, buf: bytes) -> None:
    assert isinstance(patch, Patch)
    core.enabled_store(patch, kstrtobool(buf, core.profile))


def transition_show(core: Core, patch: Owner) -> str:
    return f"{int(core.engine.patch is patch)}\n"


def force_store(core: Core, patch: Owner, buf: bytes) -> None:
    assert isinstance(patch, Patch)
    core.force_store(patch, kstrtobool(buf, core.profile))


def signal_store(core: Core, patch: Owner, buf: bytes) -> None:
    assert isinstance(patch, Patch)
    core.signal_store(patch, kstrtobool(buf, core.profile))


def replace_show(core: Core, patch: Owner) -> str:
    assert isinstance(patch, Patch)
    return f"{int(patch.replace)}\n"


def stack_order_show(core: Core, patch: Owner) -> str:
    assert isinstance(patch, Patch)
    return f"{core.stack_order(patch)}\n"


def patched_show(core: Core, obj: Owner) -> str:
    assert isinstance(obj, KlpObject)
    return f"{int(obj.patched)}\n"


def refcnt_show(core: Core, module: Owner) -> str:
    assert isinstance(module, Module)
    return f"{module.refcnt}\n"


def initstate_show(core: Core, module: Owner) -> str:
    assert isinstance(module, Module)
    return f"{module.state}\n"


def taint_show(core: Core, module: Owner) -> str:
    assert isinstance(module, Module)
    return f"{module.taint}\n"


def coresize_show(core: Core, module: Owner) -> str:
    assert isinstance(module, Module)
    return f"{module.size}\n"


PATCH_ATTRS: Final = (
    Attr("enabled", 0o644, show=enabled_show, store=enabled_store),
    Attr("transition", 0o444, show=transition_show, since=(4, 12)),
    Attr("signal", 0o200, store=signal_store, since=(4, 16), until=(5, 1)),
    Attr("force", 0o200, store=force_store, since=(4, 16)),
    Attr("replace", 0o444, show=replace_show, since=(6, 11)),
    Attr("stack_order", 0o444, show=stack_order_show, since=(6, 14)),
)
OBJECT_ATTRS: Final = (Attr("patched", 0o444, show=patched_show, since=(6, 1)),)
MODULE_ATTRS: Final = (
    Attr("coresize", 0o444, show=coresize_show),
    Attr("initstate", 0o444, show=initstate_show),
    Attr("refcnt", 0o444, show=refcnt_show),
    Attr("taint", 0o444, show=taint_show),
)
MODULE_DIRS: Final = ("holders",)
PARAMETERS: Final = "parameters"


def _param_store(module: Module, name: str) -> Store:
    def store(core: Core, owner: Owner, buf: bytes) -> None:
        # The store sees a C string: it ends at the first NUL.
        core.set_param(module, name, buf.split(b"\0", 1)[0].decode("utf-8", "replace"))

    return store


def param_attr(module: Module, name: str) -> Attr | None:
    """/sys/module/<module>/parameters/<name>: a file only for a parameter with a mode."""
    param = module.definition.param(name)
    if param is None or not param.mode:
        return None

    def show(core: Core, owner: Owner) -> str:
        return params.show(param, module.params[name])

    return Attr(name, param.mode, show=show, store=_param_store(module, name))


def kobject_attr(module: Module, attr: AttrDef) -> Attr:
    """/sys/kernel/<kobject>/<attr>: a module's own attribute; one showing a parameter
    stores into it too, where its mode lets a write through."""

    def show(core: Core, owner: Owner) -> str:
        return kobjects.show(core, module, attr)

    value = attr.value
    store = _param_store(module, value.param) if isinstance(value, ParamText) else None
    return Attr(attr.name, attr.mode, show=show, store=store)


@dataclass(slots=True)
class Node:
    """A resolved path: a directory with its entries, or an attribute of an owner.

    A directory is made afresh by every lookup; an attribute's node is kept
    and handed out again only while its owner is alive, so no node outlives
    what it shows.
    """

    owner: Owner | None
    created: float
    attr: Attr | None = None
    subdirs: Sequence[str] = ()
    files: tuple[str, ...] = ()
    path: str = ""

    @property
    def is_dir(self) -> bool:
        return self.attr is None


@dataclass(slots=True)
class Iattrs:
    """What chmod, chown and utime set on a node (kernfs_iattrs); None keeps the default."""

    mode: int | None = None
    uid: int | None = None
    gid: int | None = None
    atime: int | None = None  # nanoseconds, as utimensat(2) gives them
    mtime: int | None = None
    ctime: int | None = None


# A patch's name is its module's; read in one C-level step, as a listing of
# kernel/livepatch reads it for every patch.
_patch_name: Callable[[Patch], str] = operator.attrgetter("module.definition.name")


_UNSET: Final = Iattrs()  # what stat() reads for a node nothing was set on; never written


def _first(value: int | None, default: int) -> int:
    return default if value is None else value


def alive(owner: Owner | None) -> bool:
    """Whether the kernel object behind a node still exists."""
    if isinstance(owner, Module):
        return owner.loaded
    return owner is None or not owner.freed


@dataclass(eq=False)
class Handle:
    """An open attribute file: its node and the text of the last read at offset 0."""

    node: Node
    snapshot: bytes | None = None


class Tree:
    """Path lookups, reads and writes over the core's state."""

    def __init__(self, core: Core, uid: int | None = None, gid: int | None = None) -> None:
        self.core = core
        self.uid = os.getuid() if uid is None else uid
        self.gid = os.getgid() if gid is None else gid
        self.mounted = time.time()
        profile = core.profile
        self._patch_attrs = {a.name: a for a in PATCH_ATTRS if profile.has(a.since, a.until)}
        self._object_attrs = {a.name: a for a in OBJECT_ATTRS if profile.has(a.since, a.until)}
        self._module_attrs = {a.name: a for a in MODULE_ATTRS}
        # Set attributes live as long as the kernel object their node belongs to.
        self._iattrs: weakref.WeakKeyDictionary[Owner, dict[str, Iattrs]] = (
            weakref.WeakKeyDictionary()
        )
        self._root_iattrs: dict[str, Iattrs] = {}
        self._patch_names_seen: tuple[int, list[str]] = (-1, [])
        self._attribute_nodes: dict[str, Node] = {}  # by the path they were looked up by

    # -- lookup --------------------------------------------------------------

    def lookup(self, path: str) -> Node:
        """Resolve a mount-relative path. Raises KernelError(ENOENT)."""
        node = self._attribute_nodes.get(path)
        if node is not None and alive(node.owner):
            return node
        parts = [part for part in path.split("/") if part]
        with self.core.lock:
            node = self._resolve(parts)
        if node is None:
            raise KernelError(errno.ENOENT)
        node.path = "/".join(parts)
        if node.attr is not None:
            # An attribute stays what it is while its owner lives (directories
            # may gain or lose entries, so they are resolved every time).
            if len(self._attribute_nodes) >= MAX_ATTRIBUTE_NODES:
                self._attribute_nodes.clear()
            self._attribute_nodes[path] = node
        return node

    def _dir(
        self, owner: Owner | None, created: float, subdirs: Sequence[str], files: list[str]
    ) -> Node:
        return Node(owner, created, subdirs=subdirs, files=tuple(files))

    def _resolve(self, parts: list[str]) -> Node | None:
        core = self.core
        depth = len(parts)
        if depth == 0:
            return self._dir(None, self.mounted, ["kernel", "module"], [])
        if parts[0] == "kernel":
            if depth == 1:
                return self._dir(None, self.mounted, self._kernel_names(), [])
            if parts[1] != LIVEPATCH_KOBJECT:
                return self._resolve_kobject(parts[1], parts[2:])
            if depth == 2:
                return self._dir(None, self.mounted, self._patch_names(), [])
            patch = core.find_patch(parts[2])
            if patch is None:
                return None
            return self._resolve_patch(patch, parts[3:])
        if parts[0] == "module":
            if depth == 1:
                return self._dir(None, self.mounted, list(core.modules), [])
            module = core.modules.get(parts[1])
            if module is None:
                return None
            return self._resolve_module(module, parts[2:])
        return None

    def _patch_names(self) -> list[str]:
        """What kernel/livepatch lists, kept until a patch joins or leaves."""
        generation, names = self._patch_names_seen
        if generation != self.core.patches_generation:
            names = list(map(_patch_name, self.core.patches))
            self._patch_names_seen = (self.core.patches_generation, names)
        return names

    def _kernel_names(self) -> list[str]:
        """What kernel/ lists: livepatch, then the kobjects of loaded modules."""
        kobject_names = (k.name for m in self.core.modules.values() for k in m.definition.kobjects)
        return [LIVEPATCH_KOBJECT, *kobject_names]

    def _resolve_kobject(self, name: str, rest: list[str]) -> Node | None:
        found = kobjects.find(self.core, name)
        if found is None or len(rest) > 1:
            return None
        module, kobj = found
        if not rest:
            return self._dir(module, module.created, [], [a.name for a in kobj.attrs])
        attr = kobj.attr(rest[0])
        return Node(module, module.created, kobject_attr(module, attr)) if attr else None

    def _resolve_module(self, module: Module, rest: list[str]) -> Node | None:
        created = module.created
        names = [p.name for p in module.definition.params if p.mode]
        if not rest:
            subdirs = [*MODULE_DIRS, *([PARAMETERS] if names else [])]
            return self._dir(module, created, subdirs, list(self._module_attrs))
        if rest[0] == PARAMETERS and names:
            if len(rest) == 1:
                return self._dir(module, created, [], names)
            attr = param_attr(module, rest[1]) if len(rest) == 2 else None
            return Node(module, created, attr) if attr else None
        if len(rest) > 1:
            return None
        if rest[0] in MODULE_DIRS:
            return self._dir(module, created, [], [])
        attr = self._module_attrs.get(rest[0])
        return Node(module, created, attr) if attr else None

    def _resolve_patch(self, patch: Patch, rest: list[str]) -> Node | None:
        created = patch.module.created
        if not rest:
            return self._dir(
                patch, created, [obj.dirname for obj in patch.objects], list(self._patch_attrs)
            )
        attr = self._patch_attrs.get(rest[0])
        if attr is not None:
            return Node(patch, created, attr) if len(rest) == 1 else None
        obj = patch.find_object_dir(rest[0])
        if obj is None:
            return None
        if len(rest) == 1:
            return self._dir(
                obj, created, [func.dirname for func in obj.funcs], list(self._object_attrs)
            )
        attr = self._object_attrs.get(rest[1])
        if attr is not None:
            return Node(obj, created, attr) if len(rest) == 2 else None
        if len(rest) == 2 and any(func.dirname == rest[1] for func in obj.funcs):
            return self._dir(obj, created, [], [])
        return None

    # -- metadata ------------------------------------------------------------

    def stat(self, node: Node) -> dict[str, int]:
        """stat(2) fields (times in nanoseconds): attributes report PAGE_SIZE, directories 0."""
        if node.is_dir:
            kind, nlink, size = stat.S_IFDIR, 2 + len(node.subdirs), 0
        else:
            kind, nlink, size = stat.S_IFREG, 1, PAGE_SIZE
        set_by_user = self._node_iattrs(node, create=False) or _UNSET
        created = int(node.created * 1_000_000_000)
        default_mode = 0o755 if node.attr is None else node.attr.mode
        return {
            "st_mode": kind | _first(set_by_user.mode, default_mode),
            "st_nlink": nlink,
            "st_size": size,
            "st_uid": _first(set_by_user.uid, self.uid),
            "st_gid": _first(set_by_user.gid, self.gid),
            "st_atime": _first(set_by_user.atime, created),
            "st_mtime": _first(set_by_user.mtime, created),
            "st_ctime": _first(set_by_user.ctime, created),
        }

    def mode(self, node: Node) -> int:
        """The permission bits: the attribute's (or 0755) unless chmod changed them."""
        set_by_user = self._node_iattrs(node, create=False)
        if set_by_user is not None and set_by_user.mode is not None:
            return set_by_user.mode
        return 0o755 if node.attr is None else node.attr.mode

    def _node_iattrs(self, node: Node, create: bool) -> Iattrs | None:
        if node.owner is None:
            table: dict[str, Iattrs] | None = self._root_iattrs
        elif create:
            table = self._iattrs.setdefault(node.owner, {})
        else:
            table = self._iattrs.get(node.owner)
        if table is None:
            return None
        return table.setdefault(node.path, Iattrs()) if create else table.get(node.path)

    def setattr(self, path: str, **changes: int | None) -> None:
        """kernfs_iop_setattr(): chmod, chown and utime stick to the node until it is freed."""
        with self.core.lock:
            node = self.lookup(path)
            if not alive(node.owner):
                raise KernelError(errno.ENOENT)
            iattrs = self._node_iattrs(node, create=True)
            assert iattrs is not None
            for name, value in changes.items():
                if value is not None:
                    setattr(iattrs, name, value)
            iattrs.ctime = time.time_ns()

    def entries(self, node: Node) -> list[str]:
        with self.core.lock:
            return [*node.files, *node.subdirs]

    # -- file I/O ------------------------------------------------------------

    def open(self, path: str, flags: int) -> Handle:
        """kernfs_fop_open(): EACCES for a direction the mode lacks, even for root.

        Only the mode counts (kobj_sysfs_ops has both show and store), so a
        file chmod'ed into a direction it has no handler for opens, and then
        its read or write fails with EIO.
        """
        node = self.lookup(path)
        access = flags & os.O_ACCMODE
        if node.is_dir:
            if access != os.O_RDONLY:
                raise KernelError(errno.EISDIR)
            return Handle(node)
        mode = self.mode(node)
        if access in (os.O_WRONLY, os.O_RDWR) and not mode & 0o222:
            raise KernelError(errno.EACCES)
        if access in (os.O_RDONLY, os.O_RDWR) and not mode & 0o444:
            raise KernelError(errno.EACCES)
        return Handle(node)

    def read(self, handle: Handle, size: int, offset: int) -> bytes:
        """seq_file read: offset 0 renders the show text; later offsets slice it."""
        node = handle.node
        if node.attr is None:
            raise KernelError(errno.EISDIR)
        if node.attr.show is None:
            raise KernelError(errno.EIO)  # kobj_attr_show() without a show
        if offset == 0 or handle.snapshot is None:
            with self.core.lock:
                if not alive(node.owner):
                    raise KernelError(errno.ENODEV)
                assert node.owner is not None
                handle.snapshot = node.attr.show(self.core, node.owner).encode()
        return handle.snapshot[offset : offset + size]

    def write(self, handle: Handle, data: bytes) -> int:
        """sysfs_kf_write(): at most PAGE_SIZE bytes go to store; the offset is ignored."""
        node = handle.node
        if node.attr is None:
            raise KernelError(errno.EBADF)
        if not data:
            return 0
        if node.attr.store is None:
            raise KernelError(errno.EIO)  # kobj_attr_store() without a store
        buf = data[:PAGE_SIZE]
        with self.core.lock:
            if not alive(node.owner):
                raise KernelError(errno.ENODEV)
            assert node.owner is not None
            node.attr.store(self.core, node.owner, buf)
        return len(buf)
