# PromptLooper: `make run` starts the app with a demo, `make test` runs every test.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip

.PHONY: run test install install-dev lint bench bench-racing bench-reads services

$(PY):
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip

install: $(PY)
	$(PIP) install -q -r requirements.txt
	bash scripts/install_local_model.sh $(VENV)

install-dev: install
	$(PIP) install -q -r requirements-dev.txt
	bash scripts/install_system_deps.sh

# The pages come up at once; the bundled model builds in the background (run_local).
# Development mode: debug pages and the development SECRET_KEY (see .env.example).
run: $(PY)
	$(PIP) install -q -r requirements.txt
	DEBUG=true $(PY) manage.py run_local

test: install-dev
	bash scripts/test.sh

lint:
	$(VENV)/bin/ruff check .

# The benchmarks need the app's packages and the services, not the dev tools, Chromium or
# the bundled model (they import nothing from requirements-dev.txt).
bench: $(PY) services
	$(PIP) install -q -r requirements.txt
	$(PY) bench/sweep_throughput.py

bench-racing: $(PY) services
	$(PIP) install -q -r requirements.txt
	$(PY) bench/racing.py

bench-reads: $(PY) services
	$(PIP) install -q -r requirements.txt
	$(PY) bench/scale_reads.py

services:
	bash scripts/start_services.sh
