# Two commands for a fresh clone: `make up` (everything, running) and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
VOX    := $(VENV)/bin/voxagent
STAMP  := $(VENV)/.installed

.PHONY: up down test unit lint check lock bench bench-webhooks bench-voice bench-bridge clean-stack

$(STAMP): pyproject.toml requirements.lock
	@echo "==> creating the virtualenv and installing pinned dependencies (first run: ~1 min)"
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -c requirements.lock -e '.[dev]'
	@touch $(STAMP)

## up: install, start Kafka/PostgreSQL/ClickHouse, migrate, run API + relay + projectors
up: $(STAMP)
	$(VOX) up

## down: stop the platform and the local stack (data stays in .stack/)
down: $(STAMP)
	$(VOX) down

## test: start the local stack the tests need, then run every test (unit + integration)
test: $(STAMP)
	$(VOX) stack up
	$(PY) -m pytest -ra

unit: $(STAMP)
	$(PY) -m pytest -m unit -q

lint: $(STAMP)
	$(VENV)/bin/ruff check .

## check: lint, formatting and types (strict for domain, commands, projections); CI runs it first
check: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy --strict domain commands projections
	$(VENV)/bin/mypy adapters agent bridge infra

## lock: re-resolve requirements.lock from pyproject.toml in a throwaway venv
lock:
	rm -rf /tmp/voxagent-lock && $(PYTHON) -m venv /tmp/voxagent-lock
	/tmp/voxagent-lock/bin/pip install --quiet '.[dev]'
	/tmp/voxagent-lock/bin/pip freeze --exclude voxagent | sort > requirements.lock

bench: $(STAMP)
	$(VOX) stack up
	$(PY) bench/spine.py

## bench-webhooks: outbound webhooks, 200 events/s to 10 endpoints for 60 s (docs/benchmarks.md)
bench-webhooks: $(STAMP)
	$(VOX) stack up
	$(PY) bench/webhooks.py

## bench-voice: turn latency of scripted web calls, and calls per worker process (docs/benchmarks.md)
bench-voice: $(STAMP)
	$(VOX) stack up
	$(PY) bench/voice.py

## bench-bridge: N synthetic phone streams through the media bridge; latency, jitter, streams per core (docs/benchmarks.md)
bench-bridge: $(STAMP)
	$(VOX) stack up
	$(PY) bench/bridge.py
