"""Module parameters: parsed and printed as kernel/params.c does."""

import errno

from .errors import KernelError
from .kstrtox import kstrtobool, kstrtoint
from .modfile import ParamDef
from .profiles import Profile

ParamValue = int | bool | str


def parse(param: ParamDef, text: str | None, profile: Profile) -> ParamValue:
    """param_set_*(): a value from insmod (None for a bare name) or a sysfs write.

    Raises KernelError(EINVAL) or (ERANGE).
    """
    if param.type == "bool":
        return True if text is None else kstrtobool(text.encode(), profile)
    if text is None:
        raise KernelError(errno.EINVAL)
    if param.type == "int":
        return kstrtoint(text)
    return text.removesuffix("\n")


def show(param: ParamDef, value: ParamValue) -> str:
    """param_get_*(): the sysfs text."""
    if param.type == "bool":
        return "Y\n" if value else "N\n"
    return f"{value}\n"
