"""lpfs's error vocabulary."""

import errno
import os


class KernelError(Exception):
    """An errno that the emulated kernel returns to user space.

    Raised by the core and the sysfs layer (EINVAL, EBUSY, ENODEV, ...). Not
    an OSError: a failure of lpfs's own (an OSError from writing its kernel
    log, say) must never pass for the kernel's answer. The FUSE adapters
    answer a KernelError with its errno, the control server reports it as the
    kernel's, and the CLI turns it into kmod's or the shell's message.
    """

    def __init__(self, code: int, detail: str = "") -> None:
        super().__init__(code, detail or os.strerror(code))
        self.errno = code
        self.detail = detail

    @property
    def name(self) -> str:
        return errno.errorcode.get(self.errno, str(self.errno))

    def __str__(self) -> str:
        return self.detail or os.strerror(self.errno)


class ModfileError(ValueError):
    """A module file that cannot be read as a module definition.

    Raised by ``modfile.load``; prints as ``file: key: reason``, for example
    ``demo.toml: object[0].func[1].old_name: missing``.
    """

    def __init__(self, file: str, key: str, reason: str) -> None:
        super().__init__(file, key, reason)
        self.file = file
        self.key = key
        self.reason = reason

    def __str__(self) -> str:
        where = f"{self.file}: {self.key}" if self.key else self.file
        return f"{where}: {self.reason}"


class UnsupportedKernel(Exception):
    """The kernel offered a FUSE protocol lpfs cannot serve; the mount is given up.

    Raised by the FUSE session after it has refused the kernel's INIT; the CLI
    prints it as one line and exits 1.
    """


class RequestError(ValueError):
    """A control request that does not carry what its command needs: the client's fault.

    Raised by ``control.requests.parse`` and by a handler's own checks of its
    fields; the daemon answers it as a usage error.
    """


class ControlError(Exception):
    """A fault of the control protocol: a malformed request or reply, or no daemon.

    Raised by ``control`` on either side; the CLI reports it and exits 3 when
    the daemon cannot be reached.
    """
