# Tandem: everything starts from here. Needs python3 and make; `make install` brings the rest.
SHELL := /bin/bash
PYTHON ?= python3
UV_VERSION := 0.13.9
# uv: the one on PATH, else a private copy bootstrapped with pip into .tools/.
UV := $(shell command -v uv 2>/dev/null || echo $(CURDIR)/.tools/bin/uv)
VENV := .venv
export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := $(CURDIR)/$(VENV)

# The Debian packages of .ci/system-packages: installed when missing (as root), else named.
.PHONY: system-packages install run test test-postgres test-unit bench bench-quick chaos chaos-quick lint compose-check clean

$(CURDIR)/.tools/bin/uv:
	$(PYTHON) -m venv .tools
	.tools/bin/pip install --quiet uv==$(UV_VERSION)

$(VENV)/.synced: uv.lock pyproject.toml $(wildcard */pyproject.toml */*/pyproject.toml) | $(UV)
	$(UV) sync --frozen --all-packages --python $(PYTHON)
	touch $@

install: $(VENV)/.synced

system-packages:
	bash .ci/install-system-packages

run: install
	$(VENV)/bin/tandem up

test: system-packages install
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

# A real PostgreSQL protected end to end (issue 16), alone; `make test` runs it too.
test-postgres: system-packages install
	$(VENV)/bin/python -m pytest tests/system/test_postgres.py -m postgres $(PYTEST_ARGS)

test-unit: install
	$(VENV)/bin/python -m pytest tests/unit $(PYTEST_ARGS)

# The replication benchmark needs root (FUSE mounts) and rsync (its incremental baseline).
# The failover benchmark runs a pair of agents, the demo app and an orchestrator on loopback.
bench: system-packages install
	$(VENV)/bin/python bench/bus.py --out bench/results/bus.json
	$(VENV)/bin/python bench/replication.py --out bench/results/replication.json
	$(VENV)/bin/python bench/failover.py --out bench/results/failover.json
	$(VENV)/bin/python bench/fencing_wire.py --out bench/results/failover.json
	$(VENV)/bin/python bench/console.py --out bench/results/console.json
	$(VENV)/bin/python bench/scale.py --out bench/results/scale.json

bench-quick: system-packages install
	$(VENV)/bin/python bench/bus.py --quick --out bench/results/bus.json
	$(VENV)/bin/python bench/replication.py --quick --out bench/results/replication.json
	$(VENV)/bin/python bench/failover.py --quick --out bench/results/failover.json
	$(VENV)/bin/python bench/fencing_wire.py --out bench/results/failover.json
	$(VENV)/bin/python bench/console.py --quick --out bench/results/console.json
	$(VENV)/bin/python bench/scale.py --quick --out bench/results/scale.json

# The chaos suite (issue 15): seeded random faults on a real 3-node NATS cluster, two
# orchestrators and a pair of agents; writes bench/results/chaos.{json,md} and the timeline PNG.
chaos: system-packages install
	$(VENV)/bin/python bench/chaos.py --scenarios 200 --seed 1 --out bench/results/chaos.json

chaos-quick: system-packages install
	$(VENV)/bin/python bench/chaos.py --scenarios 20 --seed 1 --out bench/results/chaos.json

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy libs/events/src cli/src services/*/src

compose-check: system-packages install
	$(VENV)/bin/python tests/compose_check.py docker-compose.yml

clean:
	rm -rf $(VENV) .tools .pytest_cache .mypy_cache .ruff_cache
