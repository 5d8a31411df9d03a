"""Build the C client and the C baseline filesystem, installing the compiler if missing."""

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Final

BENCH_DIR: Final = Path(__file__).resolve().parent
BUILD_DIR: Final = BENCH_DIR / "build"
APT_PACKAGES: Final = ("gcc", "libfuse-dev", "pkg-config")
CFLAGS: Final = ("-O2", "-Wall", "-Wextra")


@dataclass(frozen=True)
class Binaries:
    """The two programs the bench builds."""

    client: Path
    baseline_fs: Path


def missing_packages() -> list[str]:
    """The Debian packages of APT_PACKAGES that `dpkg -s` does not report installed."""
    missing = []
    for package in APT_PACKAGES:
        result = subprocess.run(["dpkg", "-s", package], capture_output=True, check=False)
        if result.returncode != 0:
            missing.append(package)
    return missing


def install_packages(packages: list[str]) -> None:
    """apt-get install, as root or through sudo. Raises CalledProcessError."""
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    print(f"bench: installing {' '.join(packages)} (apt)", flush=True)
    subprocess.run([*sudo, "apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(
        [*sudo, "apt-get", "install", "-y", "-qq", *packages],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
    )


def ensure_packages() -> None:
    missing = missing_packages() if shutil.which("dpkg") else []
    if missing:
        install_packages(missing)


def _pkg_config(*args: str) -> list[str]:
    out = subprocess.run(
        ["pkg-config", *args, "fuse"], capture_output=True, text=True, check=True
    ).stdout
    return out.split()


def _compile(source: Path, output: Path, cflags: list[str], libs: list[str]) -> None:
    """gcc with warnings as errors; rebuilt only when the source is newer."""
    if output.exists() and output.stat().st_mtime >= source.stat().st_mtime:
        return
    cmd = ["gcc", *CFLAGS, *cflags, str(source), "-o", str(output), *libs]
    subprocess.run(cmd, check=True)


def build() -> Binaries:
    """Install what is missing, then compile bench/client.c and bench/baseline_fs.c."""
    ensure_packages()
    BUILD_DIR.mkdir(exist_ok=True)
    binaries = Binaries(BUILD_DIR / "client", BUILD_DIR / "baseline_fs")
    _compile(BENCH_DIR / "client.c", binaries.client, [], [])
    _compile(
        BENCH_DIR / "baseline_fs.c",
        binaries.baseline_fs,
        _pkg_config("--cflags"),
        _pkg_config("--libs"),
    )
    return binaries
