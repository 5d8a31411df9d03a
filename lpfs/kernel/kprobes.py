"""kprobes that modules register on functions, and /sys/kernel/debug/kprobes.

On x86-64 a kprobe at a function's entry sits on ftrace
(CONFIG_KPROBES_ON_FTRACE, kernel/kprobes.c): without a post handler it
joins kprobe_ftrace_ops, with one kprobe_ipmodify_ops, which takes the
function's IPMODIFY slot. So a kprobe with a post handler and a livepatch
of the same function exclude each other, whichever comes first
(ftrace.Ftrace.claim_ipmodify()).
"""

from dataclasses import dataclass, field
from typing import Final

from lpfs.errors import KernelError
from lpfs.kernel.ftrace import Ftrace
from lpfs.kernel.klog import KERN_INFO, KERN_WARNING, KernelLog
from lpfs.kernel.profiles import Profile

# The ftrace_ops kprobes use, which test-kprobe.sh looks for in /proc/kallsyms.
KPROBE_OPS_SYMBOLS: Final = ("kprobe_ftrace_ops", "kprobe_ipmodify_ops")
IPMODIFY_OWNER: Final = "kprobe_ipmodify_ops"


@dataclass(eq=False)
class Kprobe:
    """A registered struct kprobe on a function's entry."""

    module: str
    symbol: str
    post_handler: bool
    armed: bool = False


@dataclass
class Kprobes:
    """Every registered kprobe, and the kprobes/enabled switch (kprobes_all_disarmed)."""

    log: KernelLog
    profile: Profile
    ftrace: Ftrace
    probes: list[Kprobe] = field(default_factory=list)
    all_disarmed: bool = False

    def reset(self) -> None:
        self.probes.clear()
        self.all_disarmed = False

    def _pr(self, level: int, text: str) -> None:
        self.log.printk(level, f"kprobes: {text}")

    def register(self, probe: Kprobe) -> None:
        """register_kprobe(). Raises KernelError when arming fails, up to 6.13.

        Arming on ftrace fails with EBUSY where another IPMODIFY ops (a
        livepatch) holds the function. From ~6.14 __register_kprobe() drops
        that error: the module loads and the probe is neither armed nor kept.
        """
        if not self.all_disarmed:
            ret = self._arm(probe)
            if ret:
                if self.profile.kprobe_arm_failure_ignored:
                    return
                raise KernelError(-ret)
        self.probes.append(probe)

    def unregister_module(self, module: str) -> None:
        """unregister_kprobe() of each of the module's probes, at its exit."""
        for probe in [p for p in self.probes if p.module == module]:
            self._disarm(probe)
            self.probes.remove(probe)

    def _arm(self, probe: Kprobe) -> int:
        """arm_kprobe_ftrace(): the IPMODIFY slot for a probe with a post handler."""
        if probe.post_handler:
            ret = self.ftrace.claim_ipmodify(probe.symbol, IPMODIFY_OWNER)
            if ret:
                return ret
        probe.armed = True
        return 0

    def _disarm(self, probe: Kprobe) -> None:
        """disarm_kprobe_ftrace(): the slot is freed with its last probe."""
        if not probe.armed:
            return
        probe.armed = False
        others = any(p.armed and p.post_handler and p.symbol == probe.symbol for p in self.probes)
        if probe.post_handler and not others:
            self.ftrace.release_ipmodify(probe.symbol, IPMODIFY_OWNER)

    def set_enabled(self, enabled: bool) -> None:
        """write_enabled_file_bool(): arm_all_kprobes() or disarm_all_kprobes().

        Raises KernelError with the last arming error; the probes that could
        not be armed stay registered, disarmed.
        """
        if enabled == (not self.all_disarmed):
            return
        self.all_disarmed = not enabled
        if not enabled:
            for probe in self.probes:
                self._disarm(probe)
            self._pr(KERN_INFO, "Kprobes globally disabled")
            return
        errors = [ret for probe in self.probes if (ret := self._arm(probe))]
        if not errors:
            self._pr(KERN_INFO, "Kprobes globally enabled")
            return
        self._pr(
            KERN_WARNING,
            f"Kprobes globally enabled, but failed to enable {len(errors)} out of "
            f"{len(self.probes)} probes. Please check which kprobes are kept disabled via "
            "debugfs.",
        )
        raise KernelError(-errors[-1])

    def show_enabled(self) -> str:
        return "0\n" if self.all_disarmed else "1\n"

    def show_list(self) -> str:
        """kprobes/list (report_probe()): address, type, symbol+offset, flags."""
        return "".join(f"{0:016x}  k  {probe.symbol}+0x0    [FTRACE]\n" for probe in self.probes)
