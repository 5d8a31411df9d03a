"""Kernel behaviour by mainline version.

One daemon emulates one release. A profile answers the version questions the
rest of lpfs asks: which attributes exist, which spellings kstrtobool takes,
and which patches a forced transition marks.
"""

from dataclasses import dataclass
from typing import Final

Version = tuple[int, int]

OLDEST: Final[Version] = (4, 15)
# Newest behaviour lpfs knows: stack_order (6.14), kstrtobool's
# enable/disable spellings (~6.16) and a kernel.ftrace_enabled that refuses 0 (7.3).
NEWEST: Final[Version] = (7, 3)


@dataclass(frozen=True, slots=True)
class Profile:
    """The behaviour of one mainline release."""

    version: Version = NEWEST

    def has(self, since: Version | None, until: Version | None = None) -> bool:
        """True if a feature added in ``since`` and removed in ``until`` exists here."""
        return (since is None or self.version >= since) and (until is None or self.version < until)

    @property
    def legacy(self) -> bool:
        """4.15-5.0: the lifecycle of legacy.py; 5.1 brought atomic replace, automatic fake
        signals and klp_enable_patch() alone (lifecycle.py's ``Modern``)."""
        return self.version < (5, 1)

    @property
    def has_states(self) -> bool:
        """struct klp_state and the compatibility check at load (5.5)."""
        return self.version >= (5, 5)

    @property
    def kstrtobool_true_false(self) -> bool:
        """'t'/'T' and 'f'/'F' (5.19)."""
        return self.version >= (5, 19)

    @property
    def kstrtobool_enable_disable(self) -> bool:
        """'e'/'E' and 'd'/'D' (~6.16)."""
        return self.version >= (6, 16)

    @property
    def forced_marks_only_removed(self) -> bool:
        """Force marks only the patches being removed (5.18); before, every patch."""
        return self.version >= (5, 18)

    @property
    def refuses_vmlinux_module(self) -> bool:
        """klp_module_coming() refuses a module named vmlinux (5.8)."""
        return self.version >= (5, 8)

    @property
    def kprobe_arm_failure_ignored(self) -> bool:
        """register_kprobe() succeeds, unarmed, when arming on ftrace fails (~6.14).

        __register_kprobe() drops arm_kprobe()'s error since its guard()
        rewrite; before, register_kprobe() returned it (EBUSY for a taken
        IPMODIFY slot).
        """
        return self.version >= (6, 14)

    @property
    def ftrace_enabled_refuses_disable(self) -> bool:
        """ftrace_enable_sysctl() refuses 0 with EOPNOTSUPP: the knob is deprecated (7.3)."""
        return self.version >= (7, 3)

    @property
    def ksym_name_len(self) -> int:
        return 512 if self.version >= (6, 1) else 128

    @property
    def release(self) -> str:
        """The version as ``uname -r`` would start it."""
        return f"{self.version[0]}.{self.version[1]}.0"

    @classmethod
    def parse(cls, text: str) -> "Profile":
        """A profile from ``X.Y``, ``X.Y.Z`` or a ``uname -r`` string; ValueError if unknown."""
        head = text.strip().split("-", 1)[0].split("+", 1)[0]
        parts = head.split(".")
        try:
            version = (int(parts[0]), int(parts[1]))
        except (IndexError, ValueError):
            raise ValueError(f"'{text}' is not a kernel version (X.Y, X.Y.Z or uname -r)") from None
        if not OLDEST <= version <= NEWEST:
            lo, hi = ".".join(map(str, OLDEST)), ".".join(map(str, NEWEST))
            raise ValueError(f"kernel {text}: lpfs emulates {lo} to {hi}")
        return cls(version)
