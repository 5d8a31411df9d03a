# lpfs: install what is missing, then run, test, lint.
# `make run` and `make test` work on a fresh Debian machine: they install,
# only when absent, the Debian packages lpfs and its tests use (SYSTEM_TOOLS),
# and a virtualenv in .venv with lpfs and its development tools.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
MNT    ?= mnt

.PHONY: all deps system-deps run test lint stress clean install-system uninstall-system

all: test

# program:package, for every program lpfs or its tests run. The README's
# "Requirements" section says why each is needed.
SYSTEM_TOOLS := fusermount:fuse unshare:util-linux mount:mount bash:bash \
	insmod:kmod modinfo:kmod readelf:binutils shellcheck:shellcheck \
	sysctl:procps useradd:passwd gcc:gcc pkg-config:pkg-config \
	make:make rsync:rsync xz:xz-utils
# library or header:package
SYSTEM_FILES := /usr/include/fuse/fuse.h:libfuse-dev

system-deps:
	@missing=; \
	for pair in $(SYSTEM_TOOLS); do \
		PATH="$$PATH:/usr/sbin:/sbin" command -v $${pair%%:*} >/dev/null || missing="$$missing $${pair#*:}"; \
	done; \
	for pair in $(SYSTEM_FILES); do \
		[ -e $${pair%%:*} ] || missing="$$missing $${pair#*:}"; \
	done; \
	ldconfig -p | grep -q 'libfuse\.so\.2' || missing="$$missing libfuse2"; \
	$(PYTHON) -c 'import ensurepip, venv' 2>/dev/null || missing="$$missing python3-venv"; \
	if [ -n "$$missing" ]; then \
		missing=$$(echo $$missing | tr ' ' '\n' | sort -u | tr '\n' ' '); \
		echo "installing $$missing(apt)"; \
		SUDO=; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,fast]'
	touch $@

# Byte-compile lpfs now: with PYTHONDONTWRITEBYTECODE set (as on CI machines),
# every daemon and CLI start would otherwise compile its modules again.
deps: system-deps $(STAMP)
	@$(BIN)/python -m compileall -q lpfs

run: deps
	@mkdir -p $(MNT)
	$(BIN)/lpfs mount $(MNT) --demo --follow-log

# The suite runs on lpfs's own FUSE session (the default); the fs tests run
# again on fusepy, the required fallback, and the fs I/O tests on mfusepy.
test: deps
	$(BIN)/pytest -q
	LPFS_BINDING=fusepy $(BIN)/pytest -q tests/fs
	LPFS_BINDING=mfusepy $(BIN)/pytest -q tests/fs/test_io.py

# Outside CI: the concurrency and coherence runs at ten times the size, then an
# hour's soak; then the differential fuzzer's 500 step lists per real kernel
# from a random seed (conformance/README.md), hours on this kind of machine.
stress: deps
	LPFS_STRESS=10 $(BIN)/pytest -q tests/fs/test_concurrency.py tests/fs/test_coherence.py
	LPFS_STRESS=90 $(BIN)/pytest -q tests/fs/test_concurrency.py tests/fs/test_coherence.py
	$(MAKE) conformance CONFORMANCE_ARGS='--fuzz 500 --fuzz-seed random'

lint: deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis

# The system install: the only targets that change this host beyond apt, so
# each says what it changes first. lpfs goes into its own virtualenv with the
# system python (it outlives any pyenv); `lpfs install-system` then writes
# mount(8)'s helper and the systemd unit naming that lpfs.
SYSTEM_PYTHON ?= /usr/bin/python3
SYS_VENV      := /opt/lpfs
SUDO          := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

install-system: system-deps
	@echo "install-system changes this host:"
	@echo "  $(SYS_VENV)  a virtualenv with lpfs from $(CURDIR)"
	@echo "  /sbin/mount.lpfs  mount(8)'s helper: mount -t lpfs, fstab lines"
	@echo "  /etc/systemd/system/lpfs@.service  systemctl start lpfs@<escaped mountpoint>"
	$(SUDO) $(SYSTEM_PYTHON) -m venv $(SYS_VENV)
	$(SUDO) $(SYS_VENV)/bin/pip install -q .
	$(SUDO) $(SYS_VENV)/bin/lpfs install-system

uninstall-system:
	@echo "uninstall-system changes this host:"
	@echo "  removes /sbin/mount.lpfs, /etc/systemd/system/lpfs@.service and $(SYS_VENV)"
	[ ! -x $(SYS_VENV)/bin/lpfs ] || $(SUDO) $(SYS_VENV)/bin/lpfs install-system --uninstall
	$(SUDO) rm -rf $(SYS_VENV)

.PHONY: bench
bench: deps
	$(BIN)/python bench/run.py

# The kernel's own livepatch selftests, unmodified, from Debian's kernel
# sources, inside lpfs ns (as root); kselftest/README.md says how.
# KSELFTEST_ARGS: options of kselftest.run, e.g. --kernel 6.12 --timeout 60.
.PHONY: kselftest
kselftest: deps
	$(BIN)/python -m kselftest.run $(KSELFTEST_ARGS)

# Debian's own 6.1 and 6.12 kernels booted in QEMU, running their livepatch
# selftests: lpfs's oracle (conformance/README.md). Its tools are big (QEMU
# alone is ~200 MB), so only this target installs them, when absent.
# program:package for what it runs: the kernels' compiler, pahole for 6.12's
# module BTF, QEMU, and what the selftests' install and the initramfs use.
CONFORMANCE_TOOLS := gcc-12:gcc-12 make:make pahole:dwarves cpio:cpio rsync:rsync \
	qemu-system-x86_64:qemu-system-x86 depmod:kmod sysctl:procps
# CONFORMANCE_ARGS: options of conformance.run, e.g. --kernel linux-image-amd64.
.PHONY: conformance conformance-deps
conformance-deps:
	@missing=; \
	for pair in $(CONFORMANCE_TOOLS); do \
		PATH="$$PATH:/usr/sbin:/sbin" command -v $${pair%%:*} >/dev/null || missing="$$missing $${pair#*:}"; \
	done; \
	SUDO=; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	if [ -n "$$missing" ] || ! apt-cache show linux-image-amd64 >/dev/null 2>&1; then \
		$$SUDO apt-get update -qq; \
	fi; \
	if [ -n "$$missing" ]; then \
		echo "installing$$missing (apt)"; \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

conformance: conformance-deps deps
	$(BIN)/python -m conformance.run $(CONFORMANCE_ARGS)
