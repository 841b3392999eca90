# Two commands do all setup on a fresh machine with Python 3.11:
#   make demo   create .venv, install kdbench, run the main job on the embedded default data
#   make test   create .venv if missing, run the test suite
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test install

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

demo: install
	$(BIN)/kdbench run --student asid --teacher rcan --method facd --profile demo

test: install
	@# Headless Chromium for tests/test_report_browser.py (skips when still absent); CI runs as root on Debian.
	@command -v chromium >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1 || \
		(apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium) || \
		echo "chromium could not be installed: the browser test will skip"
	$(BIN)/python -m pytest -q -m "not slow"
