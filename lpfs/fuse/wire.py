"""What travels over /dev/fuse: opcodes, struct layouts and the limits the kernel checks.

Layouts are those of include/uapi/linux/fuse.h at ``MINOR_VERSION``; the
requests lpfs reads and the replies it sends have kept their size since 7.12,
except ``fuse_init_out`` (24 bytes before 7.23). Nothing here does I/O.
"""

import errno
import struct
from typing import Final

# Opcodes (enum fuse_opcode).
LOOKUP, FORGET, GETATTR, SETATTR, READLINK, SYMLINK = 1, 2, 3, 4, 5, 6
MKNOD, MKDIR, UNLINK, RMDIR, RENAME, LINK, OPEN, READ, WRITE = 8, 9, 10, 11, 12, 13, 14, 15, 16
STATFS, RELEASE, SETXATTR, GETXATTR, LISTXATTR, REMOVEXATTR = 17, 18, 21, 22, 23, 24
INIT, OPENDIR, READDIR, RELEASEDIR, CREATE, INTERRUPT = 26, 27, 28, 29, 35, 36
DESTROY, BATCH_FORGET, RENAME2 = 38, 42, 45
OPCODES: Final = 64  # every opcode is below this: tables indexed by opcode
# What `lpfs stats` calls each opcode, by the names of fuse.h without FUSE_.
OPCODE_NAMES: Final = {
    LOOKUP: "LOOKUP", FORGET: "FORGET", GETATTR: "GETATTR", SETATTR: "SETATTR",
    READLINK: "READLINK", SYMLINK: "SYMLINK", MKNOD: "MKNOD", MKDIR: "MKDIR",
    UNLINK: "UNLINK", RMDIR: "RMDIR", RENAME: "RENAME", LINK: "LINK", OPEN: "OPEN",
    READ: "READ", WRITE: "WRITE", STATFS: "STATFS", RELEASE: "RELEASE",
    SETXATTR: "SETXATTR", GETXATTR: "GETXATTR", LISTXATTR: "LISTXATTR",
    REMOVEXATTR: "REMOVEXATTR", INIT: "INIT", OPENDIR: "OPENDIR", READDIR: "READDIR",
    RELEASEDIR: "RELEASEDIR", CREATE: "CREATE", INTERRUPT: "INTERRUPT",
    DESTROY: "DESTROY", BATCH_FORGET: "BATCH_FORGET", RENAME2: "RENAME2",
    # Requests the session answers ENOSYS (the kernel stops sending most after one).
    20: "FSYNC", 25: "FLUSH", 30: "FSYNCDIR", 31: "GETLK", 32: "SETLK", 33: "SETLKW",
    34: "ACCESS", 37: "BMAP", 39: "IOCTL", 40: "POLL", 43: "FALLOCATE",
    44: "READDIRPLUS", 46: "LSEEK", 47: "COPY_FILE_RANGE", 50: "SYNCFS", 51: "TMPFILE",
    52: "STATX",
}  # fmt: skip

KERNEL_VERSION: Final = 7
# FOPEN_PARALLEL_DIRECT_WRITES came with 7.38; the layouts below hold up to it.
MINOR_VERSION: Final = 38
# 7.12 changed the create and mknod requests to the layout read here (Linux 2.6.31).
OLDEST_MINOR: Final = 12
INIT_OUT_23_MINOR: Final = 23  # fuse_init_out grew from 24 to 64 bytes (Linux 3.15)
PARALLEL_DIRECT_WRITES_MINOR: Final = 38
NO_OPENDIR_MINOR: Final = 29  # FUSE_NO_OPENDIR_SUPPORT (Linux 5.1)

# INIT flags (fuse_init_in.flags, fuse_init_out.flags), with the minor that brought them.
ASYNC_READ, ATOMIC_O_TRUNC, BIG_WRITES = 1 << 0, 1 << 3, 1 << 5  # 7.6, 7.9, 7.9
AUTO_INVAL_DATA: Final = 1 << 12  # 7.20
PARALLEL_DIROPS, ABORT_ERROR, NO_OPENDIR_SUPPORT = 1 << 18, 1 << 21, 1 << 24  # 7.25, 7.27, 7.29
FOPEN_DIRECT_IO, FOPEN_PARALLEL_DIRECT_WRITES = 1 << 0, 1 << 6
# Notifications (enum fuse_notify_code): a message with unique 0 and the code as its error.
NOTIFY_INVAL_INODE, NOTIFY_INVAL_ENTRY = 2, 3  # both 7.12
GETATTR_FH: Final = 1 << 0
FATTR_MODE, FATTR_UID, FATTR_GID, FATTR_SIZE = 1 << 0, 1 << 1, 1 << 2, 1 << 3
FATTR_ATIME, FATTR_MTIME, FATTR_FH = 1 << 4, 1 << 5, 1 << 6
FATTR_ATIME_NOW, FATTR_MTIME_NOW = 1 << 7, 1 << 8
ROOT_ID: Final = 1
NAME_MAX: Final = 1024  # FUSE_NAME_MAX: fuse_parse_dirfile() fails a longer name with EIO

IN_HEADER: Final = struct.Struct("<IIQQIII4x")  # len, opcode, unique, nodeid, uid, gid, pid
OUT_HEADER: Final = struct.Struct("<IiQ")  # len, error, unique
_ATTR: Final = "QQQQQQIIIIIIIIII"  # struct fuse_attr, 88 bytes
ENTRY_OUT: Final = struct.Struct("<IiQQQQQII" + _ATTR)
ATTR_OUT: Final = struct.Struct("<IiQQII" + _ATTR)
OPEN_OUT: Final = struct.Struct("<IiQQII")
WRITE_OUT: Final = struct.Struct("<IiQII")
STATFS_OUT: Final = struct.Struct("<IiQQQQQQIIII24x")
INIT_IN: Final = struct.Struct("<IIII")  # major, minor, max_readahead, flags
INIT_OUT: Final = struct.Struct("<IiQIIIIHHIIHHI28x")
INIT_OUT_22_SIZE: Final = 24  # FUSE_COMPAT_22_INIT_OUT_SIZE
GETATTR_IN: Final = struct.Struct("<IIQ")
GETXATTR_IN: Final = struct.Struct("<I4x")  # size; the name follows
GETXATTR_OUT: Final = struct.Struct("<IiQI4x")
SETATTR_IN: Final = struct.Struct("<I4xQQQQQQIIII4xII")
OPEN_IN: Final = struct.Struct("<II")
RW_IN: Final = struct.Struct("<QQI")  # fh, offset, size of read_in and write_in
WRITE_IN_SIZE: Final = 40
RELEASE_IN: Final = struct.Struct("<Q")
FORGET_IN: Final = struct.Struct("<Q")
BATCH_FORGET_IN: Final = struct.Struct("<I4x")
FORGET_ONE: Final = struct.Struct("<QQ")
CREATE_IN: Final = struct.Struct("<II8x")
MKNOD_IN: Final = struct.Struct("<II8x")
MKDIR_IN: Final = struct.Struct("<I4x")
RENAME_IN: Final = struct.Struct("<Q")
RENAME2_IN: Final = struct.Struct("<QI4x")
LINK_IN: Final = struct.Struct("<Q")
DIRENT: Final = struct.Struct("<QQII")
# The header, then fuse_notify_inval_inode_out (ino, off, len) or
# fuse_notify_inval_entry_out (parent, namelen, flags) before the name and its NUL.
NOTIFY_INVAL_INODE_OUT: Final = struct.Struct("<IiQQqq")
NOTIFY_INVAL_ENTRY_OUT: Final = struct.Struct("<IiQQII")

# Kernel-internal errnos (include/linux/errno.h) a caller in user space never sees as such.
ERESTARTSYS, ERESTART_RESTARTBLOCK, ENOTSUPP = 512, 516, 524
# fuse_dev_do_write() drops a reply whose error is -512 or below before finding its
# request (Linux 5.14 and its stable backports), and the caller waits for ever.
ERRNO_LIMIT: Final = 512


def reply_errno(code: object) -> int:
    """The errno a FUSE reply may carry for a failure with ``code``: always 1 to 511.

    Kernel-internal codes become what user space would get closest to: ENOTSUPP
    (what NFS and kernel modules return) EOPNOTSUPP, the restart codes EINTR
    (the call was interrupted), anything else out of range EIO.
    """
    if isinstance(code, int) and 0 < code < ERRNO_LIMIT:
        return code
    if code == ENOTSUPP:
        return errno.EOPNOTSUPP
    if isinstance(code, int) and ERESTARTSYS <= code <= ERESTART_RESTARTBLOCK:
        return errno.EINTR
    return errno.EIO


def error_reply(unique: int, code: int) -> bytes:
    """A reply that fails request ``unique`` with ``code`` (already in range)."""
    return OUT_HEADER.pack(OUT_HEADER.size, -code, unique)


def sendable_name(name: bytes) -> bool:
    """Whether fuse_parse_dirfile() takes the name (it fails the whole listing otherwise)."""
    return 0 < len(name) <= NAME_MAX and b"/" not in name and b"\0" not in name
