# lpfs: install what is missing, then run, test, lint.
# `make run` and `make test` work on a fresh Debian machine: they install the
# FUSE userspace (apt `fuse` + `libfuse2`) only when it is absent, and a
# virtualenv in .venv with lpfs and its development tools.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
MNT    ?= mnt

.PHONY: all deps system-deps run test lint stress clean install-system uninstall-system

all: test

system-deps:
	@if ! ldconfig -p | grep -q 'libfuse\.so\.2' || ! command -v fusermount >/dev/null; then \
		echo "installing fuse and libfuse2 (apt)"; \
		SUDO=; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq fuse libfuse2 >/dev/null; \
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

# Outside CI: the concurrency run at ten times the size, then an hour's soak.
stress: deps
	LPFS_STRESS=10 $(BIN)/pytest -q tests/fs/test_concurrency.py
	LPFS_STRESS=90 $(BIN)/pytest -q tests/fs/test_concurrency.py

lint: deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis

# The system install: the only targets that change this host beyond apt, so
# each says what it changes first. The paths are fixed because mount.lpfs and
# lpfs@.service name /opt/lpfs/bin/lpfs; the system python outlives any pyenv.
SYSTEM_PYTHON ?= /usr/bin/python3
SYS_VENV      := /opt/lpfs
SYS_HELPER    := /sbin/mount.lpfs
SYS_UNIT      := /etc/systemd/system/lpfs@.service
SUDO          := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
DAEMON_RELOAD := if [ -d /run/systemd/system ]; then $(SUDO) systemctl daemon-reload; fi

install-system: system-deps
	@echo "install-system changes this host:"
	@echo "  $(SYS_VENV)  a virtualenv with lpfs from $(CURDIR)"
	@echo "  $(SYS_HELPER)  mount(8)'s helper: mount -t lpfs, fstab lines"
	@echo "  $(SYS_UNIT)  systemd unit: systemctl start lpfs@<escaped mountpoint>"
	$(SUDO) $(SYSTEM_PYTHON) -m venv $(SYS_VENV)
	$(SUDO) $(SYS_VENV)/bin/pip install -q .
	$(SUDO) install -m 0755 mountpoint-scripts/mount.lpfs $(SYS_HELPER)
	$(SUDO) install -m 0644 mountpoint-scripts/lpfs@.service $(SYS_UNIT)
	@$(DAEMON_RELOAD)

uninstall-system:
	@echo "uninstall-system changes this host:"
	@echo "  removes $(SYS_VENV), $(SYS_HELPER) and $(SYS_UNIT)"
	$(SUDO) rm -rf $(SYS_VENV)
	$(SUDO) rm -f $(SYS_HELPER) $(SYS_UNIT)
	@$(DAEMON_RELOAD)

.PHONY: bench
bench: deps
	$(BIN)/python bench/run.py
