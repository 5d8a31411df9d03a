"""Module parameters: parsed and printed as kernel/params.c does."""

import errno

from lpfs.errors import KernelError
from lpfs.kernel.kstrtox import kstrtobool, kstrtoint
from lpfs.kernel.profiles import Profile
from lpfs.kernel.structs import ParamDef, ParamScalar, ParamValue


def parse(param: ParamDef, text: str | None, profile: Profile) -> ParamValue:
    """param_set_*(), or param_array_set() for an array: a value from insmod (None for a
    bare name) or a sysfs write.

    Raises KernelError(EINVAL) or (ERANGE).
    """
    if not param.array:
        return _parse_scalar(param, text, profile)
    if text is None:
        raise KernelError(errno.EINVAL)  # only a bool takes a bare name, not an array
    elements = text.split(",")
    if len(elements) > param.array:
        raise KernelError(errno.EINVAL)
    return tuple(_parse_scalar(param, element, profile) for element in elements)


def _parse_scalar(param: ParamDef, text: str | None, profile: Profile) -> ParamScalar:
    if param.type == "bool":
        return True if text is None else kstrtobool(text.encode(), profile)
    if text is None:
        raise KernelError(errno.EINVAL)
    if param.type == "int":
        return kstrtoint(text)
    return text.removesuffix("\n")


def show(param: ParamDef, value: ParamValue) -> str:
    """param_get_*(), or param_array_get(): elements joined by commas, nothing for none."""
    if isinstance(value, tuple):
        return ",".join(_show_scalar(param, e) for e in value) + ("\n" if value else "")
    return f"{_show_scalar(param, value)}\n"


def _show_scalar(param: ParamDef, value: ParamScalar) -> str:
    if param.type == "bool":
        return "Y" if value else "N"
    return f"{value}"
