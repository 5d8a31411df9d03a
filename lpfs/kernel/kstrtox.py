"""lib/kstrtox.c: how the kernel turns user text into booleans and integers."""

import errno
from typing import Final

from lpfs.errors import KernelError
from lpfs.kernel.profiles import Profile

INT_MIN: Final = -(2**31)
INT_MAX: Final = 2**31 - 1
_DIGITS: Final = "0123456789abcdef"


def kstrtobool(buf: bytes, profile: Profile) -> bool:
    """kstrtobool(): only the first one or two bytes count.

    Raises KernelError(EINVAL) for anything it does not recognise.
    """
    first = buf[:1]
    if first in (b"y", b"Y", b"1"):
        return True
    if first in (b"n", b"N", b"0"):
        return False
    if profile.kstrtobool_true_false and first in (b"t", b"T", b"f", b"F"):
        return first in (b"t", b"T")
    if profile.kstrtobool_enable_disable and first in (b"e", b"E", b"d", b"D"):
        return first in (b"e", b"E")
    if first in (b"o", b"O"):
        second = buf[1:2]
        if second in (b"n", b"N"):
            return True
        if second in (b"f", b"F"):
            return False
    raise KernelError(errno.EINVAL)


def kstrtoint(text: str) -> int:
    """kstrtoint(s, 0): a sign, then decimal, 0x hex or 0-prefixed octal, one newline.

    Raises KernelError: EINVAL for anything else, ERANGE outside int.
    """
    s = text.removesuffix("\n")
    sign = -1 if s[:1] == "-" else 1
    s = s[1:] if s[:1] in ("-", "+") else s
    if s[:2].lower() == "0x" and len(s) > 2:
        base, digits = 16, s[2:]
    elif s[:1] == "0" and len(s) > 1:
        base, digits = 8, s[1:]
    else:
        base, digits = 10, s
    if not digits or any(c not in _DIGITS[:base] for c in digits.lower()):
        raise KernelError(errno.EINVAL)
    value = sign * int(digits, base)
    if not INT_MIN <= value <= INT_MAX:
        raise KernelError(errno.ERANGE)
    return value
