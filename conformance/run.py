"""``make conformance``: Debian's own kernels, booted in QEMU, as lpfs's oracle.

For each kernel: download and unpack its packages, build the livepatch test
modules against its headers, make an initramfs of the host's programs, boot
it, run the kernel's own livepatch selftests, and report the exact package
versions and the TAP summary; then run the portable scenarios on the kernel and
in ``lpfs ns`` and report where they disagree. Exits 1 if a selftest failed on
a real kernel.
"""

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from kselftest.sources import FetchError

from . import compare, fetch, initramfs, selftests, treebuild
from .compare import LeftoverError
from .console import ConsoleError
from .initramfs import InitramfsError
from .kernels import METAPACKAGES, AptError, Kernel, pick
from .lpfsns import LpfsNs
from .scenarios import SCENARIOS
from .treebuild import BuildError
from .vm import Vm


def cache_root() -> Path:
    """lpfs's cache: ``$XDG_CACHE_HOME/lpfs``, or ``~/.cache/lpfs``."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "lpfs"


@dataclass(frozen=True)
class Prepared:
    """What a boot of one kernel needs, and the time it took to make."""

    kernel_image: Path
    initramfs: Path
    seconds: float


def prepare(kernel: Kernel, cache: Path, source_debs: Path) -> Prepared:
    started = time.monotonic()
    debs = cache / "debs"
    root = cache / "roots" / kernel.release
    work = cache / "build" / kernel.release
    work.mkdir(parents=True, exist_ok=True)
    log = work / "build.log"
    log.unlink(missing_ok=True)
    kdir = fetch.unpack_kernel(kernel, debs, root)
    source = fetch.unpack_source(
        kernel, source_debs, cache / "sources" / f"{kernel.source.name}_{kernel.source.version}"
    )
    tree = work / "tree"
    treebuild.copy_tree(source, tree)
    modules = treebuild.build_modules(kernel, kdir, tree, log)
    kselftest = treebuild.install_selftests(tree, work / "kselftest", log)
    image = initramfs.make(
        work / "initramfs",
        work / "initramfs.cpio",
        image_root=root,
        release=kernel.release,
        modules=modules,
        kselftest=kselftest,
    )
    return Prepared(root / "boot" / f"vmlinuz-{kernel.release}", image, time.monotonic() - started)


@dataclass(frozen=True)
class Verdict:
    """One kernel's counts: selftests passed and failed there, and the steps
    where lpfs disagreed with it."""

    passed: int
    failed: int
    disagreements: int


def conform(kernel: Kernel, cache: Path, source_debs: Path) -> Verdict:
    """Run everything on ``kernel`` and print its report."""
    print(f"== {kernel.release} (from {kernel.metapackage})", flush=True)
    for package in kernel.packages:
        print(f"   {package}")
    prepared = prepare(kernel, cache, source_debs)
    print(f"   prepared in {prepared.seconds:.1f} s: unpacked, modules built, initramfs made")
    work = cache / "build" / kernel.release
    transcript = work / "console.log"
    with Vm(prepared.kernel_image, prepared.initramfs, transcript, work / "kernel.log") as vm:
        print(f"   booted in {vm.boot_seconds:.1f} s", flush=True)
        run = selftests.run(vm)
        started = time.monotonic()
        on_kernel = [compare.observe(vm, scenario) for scenario in SCENARIOS]
        kernel_seconds = time.monotonic() - started
    print(f"   selftests: {run.summary.describe()} in {run.seconds:.1f} s")
    for result in run.summary.results:
        mark = "ok" if result.passed else "skip" if result.ok else "FAIL"
        print(f"     {mark:4} {result.script}")
    failures = sum(not r.passed for r in run.summary.results)
    # A runner that failed without a "not ok" line, or left scripts unrun, is one failure.
    failed = failures or int(run.status != 0 or not run.summary.passed)
    if failed:
        print(f"   the selftests' whole output is in {transcript}")
    with LpfsNs(kernel.release, work / "lpfs.log") as lpfs:
        on_lpfs = [compare.observe(lpfs, scenario) for scenario in SCENARIOS]
    disagreements = report_scenarios(on_kernel, on_lpfs, kernel_seconds)
    return Verdict(sum(r.passed for r in run.summary.results), failed, disagreements)


def report_scenarios(
    on_kernel: list[list[compare.Observation]],
    on_lpfs: list[list[compare.Observation]],
    kernel_seconds: float,
) -> int:
    """Print each scenario's disagreements between the kernel and lpfs, step by
    step; returns how many there are."""
    steps = sum(len(observations) for observations in on_kernel)
    found = [
        (scenario, number, kernel[number - 1].step, field, diff)
        for scenario, kernel, lpfs in zip(SCENARIOS, on_kernel, on_lpfs, strict=True)
        for number, field, diff in compare.disagreements(kernel, lpfs)
    ]
    print(
        f"   scenarios: {len(SCENARIOS)} run ({kernel_seconds:.1f} s on the kernel), "
        f"{steps} steps compared, {len(found)} disagreements"
    )
    for scenario, number, step, field, diff in found:
        print(f"     {scenario.name}, step {number} ({step}): {field}")
        print("\n".join(f"       {line}" for line in diff.splitlines()))
    return len(found)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--kernel",
        action="append",
        metavar="METAPACKAGE",
        help=f"a kernel metapackage (repeatable; default: {' '.join(METAPACKAGES)})",
    )
    parser.add_argument(
        "--cache",
        type=Path,
        default=cache_root() / "conformance",
        help="where packages are downloaded and unpacked and builds run",
    )
    args = parser.parse_args()
    # linux-source is the package `make kselftest` downloads too: one download.
    kselftest_cache = os.environ.get("LPFS_KSELFTEST_CACHE") or cache_root() / "kselftest"
    source_debs = Path(kselftest_cache) / "debs"
    started = time.monotonic()
    metapackages = args.kernel or METAPACKAGES
    try:
        verdicts = [conform(pick(name), args.cache, source_debs) for name in metapackages]
    except (
        AptError,
        FetchError,
        BuildError,
        InitramfsError,
        ConsoleError,
        LeftoverError,
    ) as error:
        print(f"conformance: {error}", file=sys.stderr)
        return 1
    passed = sum(verdict.passed for verdict in verdicts)
    failed = sum(verdict.failed for verdict in verdicts)
    disagreements = sum(verdict.disagreements for verdict in verdicts)
    print(
        f"== {len(verdicts)} kernels in {time.monotonic() - started:.0f} s; "
        f"{disagreements} disagreements with lpfs (reported, not failures)"
    )
    # The selftests' count, in the plain form CI reads.
    print(f"conformance: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
