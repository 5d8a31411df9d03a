"""Dynamic debug for the emulated pr_debug sites (lib/dynamic_debug.c's control file).

The selftests write ``file kernel/livepatch/* +p`` and ``func
klp_try_switch_task -p`` to /sys/kernel/debug/dynamic_debug/control, read the
``kernel/livepatch`` lines back to save them, and restore them with ``file F
line N =p``. This module knows lpfs's pr_debug sites and applies such
queries to the set of enabled ones.
"""

import errno
import fnmatch
from dataclasses import dataclass
from typing import Final

from lpfs.errors import KernelError


@dataclass(frozen=True, slots=True)
class Site:
    """One pr_debug call: where it is and what it prints."""

    file: str
    line: int
    function: str
    format: str


SITES: Final = (
    Site(
        "kernel/livepatch/transition.c",
        116,
        "klp_complete_transition",
        "'%s': completing %s transition\\012",
    ),
    Site(
        "kernel/livepatch/transition.c",
        188,
        "klp_cancel_transition",
        "'%s': canceling patching transition, going to unpatch\\012",
    ),
    Site("kernel/livepatch/transition.c", 330, "klp_try_switch_task", "%s: %s:%d is running\\012"),
    Site(
        "kernel/livepatch/transition.c",
        334,
        "klp_try_switch_task",
        "%s: %s:%d has an unreliable stack\\012",
    ),
    Site(
        "kernel/livepatch/transition.c",
        338,
        "klp_try_switch_task",
        "%s: %s:%d is sleeping on function %s\\012",
    ),
    Site(
        "kernel/livepatch/transition.c",
        342,
        "klp_try_switch_task",
        "%s: Unknown error code (%d) when trying to switch %s:%d\\012",
    ),
    Site(
        "kernel/livepatch/transition.c",
        535,
        "klp_init_transition",
        "'%s': initializing %s transition\\012",
    ),
    Site(
        "kernel/livepatch/transition.c",
        658,
        "klp_reverse_transition",
        "'%s': reversing transition from %s\\012",
    ),
)
# The selftests' set_dynamic_debug(): everything in kernel/livepatch but the per-task lines.
DEFAULT_ON: Final = frozenset(s for s in SITES if s.function != "klp_try_switch_task")


def control_text(enabled: frozenset[Site] | set[Site]) -> str:
    """The control file's listing: ``file:line [module]function flags "format"``."""
    lines = ["# filename:lineno [module]function flags format"]
    for site in SITES:
        flags = "=p" if site in enabled else "=_"
        lines.append(f'{site.file}:{site.line} [livepatch]{site.function} {flags} "{site.format}"')
    return "\n".join(lines) + "\n"


def apply(query: str, enabled: set[Site]) -> None:
    """One or more ``;``/newline separated queries; EINVAL for one the parser rejects."""
    for command in query.replace(";", "\n").splitlines():
        words = command.split("#", 1)[0].split()
        if words:
            _apply_one(words, enabled)


def _apply_one(words: list[str], enabled: set[Site]) -> None:
    *terms, flags = words
    if len(terms) % 2 or not flags or flags[0] not in "+-=":
        raise KernelError(errno.EINVAL)
    matches = list(SITES)
    for keyword, value in zip(terms[::2], terms[1::2], strict=True):
        matches = [site for site in matches if _matches(site, keyword, value)]
    if not set(flags[1:]) <= set("pflmt_"):
        raise KernelError(errno.EINVAL)
    printing = "p" in flags[1:]
    for site in matches:
        if (flags[0] == "+" and printing) or (flags[0] == "=" and printing):
            enabled.add(site)
        elif (flags[0] == "-" and printing) or flags[0] == "=":
            enabled.discard(site)


def _matches(site: Site, keyword: str, value: str) -> bool:
    if keyword == "file":
        return fnmatch.fnmatchcase(site.file, value) or fnmatch.fnmatchcase(
            site.file.rsplit("/", 1)[-1], value
        )
    if keyword == "func":
        return fnmatch.fnmatchcase(site.function, value)
    if keyword == "module":
        return fnmatch.fnmatchcase("livepatch", value)
    if keyword == "format":
        return value in site.format
    if keyword == "line":
        low, _, high = value.partition("-")
        try:
            return int(low or 0) <= site.line <= int(high or low or 10**9)
        except ValueError:
            raise KernelError(errno.EINVAL) from None
    raise KernelError(errno.EINVAL)
