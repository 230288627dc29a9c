# The course's commands. `make book` and `make test` are the two that matter; both create
# .venv/ at the repository root if it is missing and install the pinned requirements into it.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
# pytest-xdist workers of `make test` and `make test-fast` (auto: one per core; 0: one process);
# `make test` runs each test module on one worker (tests/test_nbgrader.py: each assignment on one)
TEST_JOBS ?= auto
FAST_JOBS ?= $(TEST_JOBS)
# nbgrader runs helper programs (alembic) by name: the venv's tools come first
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: help install browser sandbox book test test-fast release collect grade feedback grades lock clean

help:
	@echo "make book     build the rendered book into _build/html (executes every chapter)"
	@echo "make test     run the whole test suite (installs Debian's chromium for the browser tests if missing)"
	@echo "make test-fast  the unit tests alone (no notebook, nbgrader, sandbox or book build): under a minute"
	@echo "make release  regenerate exercises/ from solutions/ with nbgrader (and create gradebook.db)"
	@echo "make collect ASSIGNMENT=scaling FROM=folder-or.zip   put submissions into submitted/"
	@echo "make grade ASSIGNMENT=scaling [JOBS=2] [GRADE_ARGS=] preflight, then autograde the class, each kernel sandboxed"
	@echo "make feedback ASSIGNMENT=scaling                     HTML feedback (hidden tests hidden)"
	@echo "make grades                                          grades.csv and reports/<assignment>/report.md"
	@echo "make lock     re-resolve requirements.in into the pinned requirements.txt"
	@echo "make clean    remove _build/ and the execution cache"

install: $(STAMP)

# Reinstall only when the pins or the package metadata change.
$(STAMP): requirements.txt pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	@touch $@

# tools/execute_chapters.py runs the chapters in parallel (one per core) into the execution
# cache; jupyter-book then renders them from it, running only a chapter that failed there
book: $(STAMP)
	COURSEKIT_PROGRESS=0 $(PY) tools/execute_chapters.py
	COURSEKIT_PROGRESS=0 $(VENV)/bin/jupyter-book build . --warningiserror --keep-going
	@$(PY) tools/chapter_times.py

test: $(STAMP) browser sandbox
	$(PY) -m pytest -n $(TEST_JOBS) --dist loadscope --no-loadscope-reorder $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(PY) -m pytest -n $(FAST_JOBS) -m "not slow" $(PYTEST_ARGS)

# Debian's Chromium and ChromeDriver, for the tests that open the book in a browser
# (tests/test_browser.py): installed with apt-get when missing (as root, or with sudo).
# Set CHROMIUM and CHROMEDRIVER to use a browser of your own instead.
BROWSER_PACKAGES := chromium chromium-driver
browser:
	@if [ -n "$$CHROMIUM" ] && [ -n "$$CHROMEDRIVER" ]; then :; \
	elif command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif ! command -v apt-get >/dev/null; then \
	  echo "the tests need Chromium and ChromeDriver: install Debian's $(BROWSER_PACKAGES), or set CHROMIUM and CHROMEDRIVER" >&2; exit 1; \
	else \
	  sudo=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  echo "installing $(BROWSER_PACKAGES) with apt-get"; \
	  $$sudo apt-get update -qq && $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(BROWSER_PACKAGES) >/dev/null; \
	fi

# bubblewrap confines each student's kernel while grading (coursekit/classroom/sandbox.py):
# installed with apt-get when missing (as root, or with sudo). BWRAP overrides the executable.
sandbox:
	@if [ -n "$$BWRAP" ] || command -v bwrap >/dev/null; then :; \
	elif ! command -v apt-get >/dev/null; then \
	  echo "grading needs bubblewrap (bwrap): install your system's bubblewrap package, or set BWRAP" >&2; exit 1; \
	else \
	  sudo=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  echo "installing bubblewrap with apt-get"; \
	  $$sudo apt-get update -qq && $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null; \
	fi

release: $(STAMP)
	for a in $$(ls solutions); do $(VENV)/bin/nbgrader generate_assignment $$a --force || exit 1; done

# Instructors: one command per step (coursekit.classroom wraps nbgrader)
JOBS ?=
collect: $(STAMP)
	$(PY) -m coursekit.classroom collect $(ASSIGNMENT) $(FROM)

grade: $(STAMP) sandbox
	$(PY) -m coursekit.classroom grade $(ASSIGNMENT) $(if $(JOBS),--jobs $(JOBS)) $(GRADE_ARGS)

feedback: $(STAMP)
	$(PY) -m coursekit.classroom feedback $(ASSIGNMENT)

grades: $(STAMP)
	$(PY) -m coursekit.classroom export

lock:
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements.in
	$(PY) -m pip freeze --exclude-editable | sed -E 's/^torch==([0-9.]+)\+cpu$$/torch==\1/' > requirements.txt

clean:
	rm -rf _build
