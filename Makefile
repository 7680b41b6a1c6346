# make demo: run the examples and show their dumps.  make test: lint and the whole suite.
# Both set up what they need: the virtual environment in .venv/ and, for the tests that
# need them, a Debian sid chroot with modern gdb and CPython 3.13-3.15 in .cache/.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CHROOT := .cache/sid-chroot

.PHONY: install lint test demo bench chroot clean

install: $(STAMP)
	@:

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[test]' >$(VENV)/pip.log 2>&1 \
		|| { cat $(VENV)/pip.log; exit 1; }
	@touch $@

chroot:
	@if [ "$$(id -u)" = 0 ]; then tests/chroot/provision.sh $(CHROOT); \
	else echo "not root: no $(CHROOT); the tests that need it will skip"; fi

lint: install
	@$(BIN)/ruff check .
	@$(BIN)/ruff format --check --quiet .
	@$(BIN)/mypy

test: lint chroot
	@$(BIN)/python -m pytest

demo: install
	@$(BIN)/python examples/demo.py

# The figures behind BENCHMARKS.md, as Markdown tables on standard output. The methods
# bench needs the chroot's gdb (root) and fetches hypno from PyPI into a scratch venv.
RUNS ?= 10

bench: install chroot
	@$(BIN)/python bench/library.py
	@$(BIN)/python bench/ncore_methods.py --runs $(RUNS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
