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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from kselftest.sources import FetchError
from lpfs.errors import ModfileError

from . import compare, fetch, fuzz, initramfs, recording, selftests, treebuild
from .compare import LeftoverError
from .console import ConsoleError
from .initramfs import InitramfsError
from .kernels import METAPACKAGES, AptError, Kernel, pick
from .lpfsns import LpfsNs
from .modcc import NotPortable
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
    modules = treebuild.build_test_modules(kernel, kdir, tree, log)
    modules += treebuild.build_generated(kdir, work / "generated", log)
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
class FuzzOptions:
    examples: int
    seed: int | None  # None: hypothesis picks one
    shrink: bool


@dataclass(frozen=True)
class Verdict:
    """One kernel's counts: selftests passed and failed there, and the steps
    where lpfs disagreed with it."""

    passed: int
    failed: int
    disagreements: int


def conform(
    kernel: Kernel, cache: Path, source_debs: Path, record: bool, options: FuzzOptions
) -> Verdict:
    """Run everything on ``kernel`` and print its report."""
    print(f"== {kernel.release} (from {kernel.metapackage})", flush=True)
    for package in kernel.packages:
        print(f"   {package}")
    prepared = prepare(kernel, cache, source_debs)
    print(f"   prepared in {prepared.seconds:.1f} s: unpacked, modules built, initramfs made")
    work = cache / "build" / kernel.release
    transcript = work / "console.log"

    def boot() -> Vm:
        return Vm(prepared.kernel_image, prepared.initramfs, transcript, work / "kernel.log")

    def lpfs_ns() -> LpfsNs:
        return LpfsNs(kernel.release, work / "lpfs.log")

    with boot() as vm:
        print(f"   booted in {vm.boot_seconds:.1f} s", flush=True)
        run = selftests.run(vm)
    started = time.monotonic()
    # QEMU keeps one core busy; lpfs runs the same scenarios on the other.
    with ThreadPoolExecutor(1) as pool:
        lpfs_observed = pool.submit(compare.observe_all, lpfs_ns, SCENARIOS)
        on_kernel = compare.observe_all(boot, SCENARIOS)
        on_lpfs = lpfs_observed.result()
    kernel_seconds = time.monotonic() - started
    keep(kernel.release, on_kernel, work, record)
    print(f"   selftests: {run.summary.describe()} in {run.seconds:.1f} s")
    for result in run.summary.results:
        mark = "ok" if result.passed else "skip" if result.ok else "FAIL"
        print(f"     {mark:4} {result.script}")
    failures = sum(not r.passed for r in run.summary.results)
    # A runner that failed without a "not ok" line, or left scripts unrun, is one failure.
    failed = failures or int(run.status != 0 or not run.summary.passed)
    if failed:
        print(f"   the selftests' whole output is in {transcript}")
    disagreements = report_scenarios(on_kernel, on_lpfs, kernel_seconds)
    disagreements += report_fuzz(compare.Side(boot), compare.Side(lpfs_ns), options)
    return Verdict(sum(r.passed for r in run.summary.results), failed, disagreements)


def keep(release: str, observed: list[list[compare.Observation]], work: Path, record: bool) -> None:
    """Write the kernel's observations beside the build, and say whether they
    match the recording ``make test`` compares lpfs with; with ``record``,
    replace that recording."""
    made = recording.Recording(
        release, {scenario.name: steps for scenario, steps in zip(SCENARIOS, observed, strict=True)}
    )
    text = recording.dumps(made)
    (work / "recorded.txt").write_text(text)
    kept = recording.path_of(release)
    if record:
        kept.parent.mkdir(exist_ok=True)
        kept.write_text(text)
        print(f"   recorded in {kept.relative_to(Path.cwd())}")
    elif kept.is_file() and kept.read_text() == text:
        print(f"   the kernel did as {kept.name} records")
    else:
        print(
            f"   the kernel did not do as {kept.name} records: compare {work / 'recorded.txt'}; "
            "`make conformance CONFORMANCE_ARGS=--record` takes it"
        )


def report_fuzz(kernel: compare.Side, lpfs: compare.Side, options: FuzzOptions) -> int:
    """Run the fuzzer and print its disagreements; returns how many there are."""
    if not options.examples:
        return 0
    started = time.monotonic()
    try:
        report = fuzz.run(kernel, lpfs, options.examples, options.seed, options.shrink)
    except fuzz.Disagreement as shrunk:
        print("   fuzzer: a disagreement, shrunk to:")
        print("\n".join(f"     {line}" for line in str(shrunk).splitlines()))
        return 1
    seed = "a random seed" if options.seed is None else f"seed {options.seed}"
    print(
        f"   fuzzer: {report.examples} step lists ({seed}, {report.steps} steps) in "
        f"{time.monotonic() - started:.0f} s, {len(report.found)} disagreements"
    )
    for scenario, found in report.found:
        print("\n".join(f"     {line}" for line in fuzz.describe(scenario, found).splitlines()))
    return len(report.found)


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
    parser.add_argument(
        "--record",
        action="store_true",
        help="keep what the kernels did in conformance/recorded, which make test compares with",
    )
    parser.add_argument(
        "--fuzz",
        type=int,
        default=25,
        metavar="N",
        help="step lists the differential fuzzer runs on each kernel (default 25; 0: none)",
    )
    parser.add_argument(
        "--fuzz-seed",
        default=str(fuzz.CI_SEED),
        help="the fuzzer's seed, or 'random' (default: a fixed seed, the same lists every run)",
    )
    parser.add_argument(
        "--shrink",
        action="store_true",
        help="stop at the fuzzer's first disagreement and shrink it to a minimal step list",
    )
    args = parser.parse_args()
    options = FuzzOptions(
        args.fuzz, None if args.fuzz_seed == "random" else int(args.fuzz_seed), args.shrink
    )
    # linux-source is the package `make kselftest` downloads too: one download.
    kselftest_cache = os.environ.get("LPFS_KSELFTEST_CACHE") or cache_root() / "kselftest"
    source_debs = Path(kselftest_cache) / "debs"
    started = time.monotonic()
    metapackages = args.kernel or METAPACKAGES
    try:
        verdicts = [
            conform(pick(name), args.cache, source_debs, args.record, options)
            for name in metapackages
        ]
    except (
        AptError,
        FetchError,
        BuildError,
        InitramfsError,
        ConsoleError,
        LeftoverError,
        NotPortable,
        ModfileError,
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
