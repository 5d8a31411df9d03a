# lpfs: install what is missing, then run, test, lint.
# `make run` and `make test` work on a fresh Debian machine: they install the
# FUSE userspace (apt `fuse` + `libfuse2`) only when it is absent, and a
# virtualenv in .venv with lpfs and its development tools.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
MNT    ?= mnt

.PHONY: all deps system-deps run test lint stress clean

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
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

deps: system-deps $(STAMP)

run: deps
	@mkdir -p $(MNT)
	$(BIN)/lpfs mount $(MNT) --demo --follow-log

test: deps
	$(BIN)/pytest -q

lint: deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
