"""Download a kernel's packages with ``apt-get download`` and unpack them with
``dpkg-deb -x`` into the cache: nothing is installed on the host.

The image, headers, ``-common`` headers and kbuild of one kernel are unpacked
into one directory, as they would be under ``/``, so that the headers'
relative links (``scripts -> ../../lib/linux-kbuild-X/scripts``) resolve. Of
``linux-source`` only the few directories the run builds or runs are taken
out of the tree's tarball.
"""

import re
import shutil
import subprocess
from pathlib import Path
from typing import Final

from kselftest.sources import SELFTEST_FILES, FetchError, extract_members

from .kernels import Kernel, Package, apt

# Written once a directory is fully unpacked: a directory without it is redone.
UNPACKED: Final = ".unpacked"


def download(package: Package, debs: Path) -> Path:
    """``package``'s .deb in ``debs``, downloaded unless it is already there."""
    debs.mkdir(parents=True, exist_ok=True)
    record = apt("apt-cache", "show", f"{package.name}={package.version}")
    filename = re.search(r"^Filename: (.+)$", record, re.MULTILINE)
    if filename is None:
        raise FetchError(f"apt has no {package}")
    deb = debs / Path(filename[1]).name
    if not deb.is_file():
        result = subprocess.run(
            ["apt-get", "download", "-q", f"{package.name}={package.version}"],
            cwd=debs,
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0 or not deb.is_file():
            raise FetchError(f"apt-get download {package}: {result.stderr.strip()}")
    return deb


def unpack_kernel(kernel: Kernel, debs: Path, root: Path) -> Path:
    """The kernel's image, headers, -common headers and kbuild unpacked under ``root``.

    Returns the headers' directory (the ``KDIR`` of out-of-tree builds), whose
    Makefile now includes the unpacked ``-common`` tree instead of the one under
    ``/usr/src``.
    """
    headers = root / "usr/src" / kernel.headers.name
    if (root / UNPACKED).is_file():
        return headers
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    for package in (kernel.image, kernel.headers, kernel.common, kernel.kbuild):
        deb = download(package, debs)
        result = subprocess.run(
            ["dpkg-deb", "-x", deb, root], capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            raise FetchError(f"dpkg-deb -x {deb.name}: {result.stderr.strip()}")
    makefile = headers / "Makefile"
    common = f"/usr/src/{kernel.common.name}"
    makefile.write_text(makefile.read_text().replace(common, str(root) + common))
    (root / UNPACKED).touch()
    return headers


def unpack_source(kernel: Kernel, debs: Path, into: Path) -> Path:
    """The top of linux-source's tree, with only the selftests and test modules
    taken out of it."""
    top = into / kernel.source.name
    if (into / UNPACKED).is_file():
        return top
    shutil.rmtree(into, ignore_errors=True)
    into.mkdir(parents=True)
    deb = download(kernel.source, debs)
    wanted = (*SELFTEST_FILES, kernel.test_modules)
    # tar fails on a member already taken out with its parent directory.
    members = [member for member in wanted if not any(member.startswith(f"{p}/") for p in wanted)]
    extract_members(deb, kernel.source.name, into, members)
    (into / UNPACKED).touch()
    return top
