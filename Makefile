PY := .venv/bin/python
PG ?= postgres://postgres@127.0.0.1:5432/test
REDIS ?= redis://127.0.0.1:6379/0

.PHONY: install run test test-embedded lint bench

install:
	python3 -m venv .venv && .venv/bin/pip install -e '.[hive,dev]'

run:
	.venv/bin/rbee up

test:
	RBEE_DATABASE_URL=$(PG) RBEE_REDIS_URL=$(REDIS) $(PY) -m pytest -n 2

test-embedded:
	$(PY) -m pytest -n 2

lint:
	.venv/bin/ruff check . && .venv/bin/ruff format --check . && .venv/bin/mypy
	RBEE_HOME=$$(mktemp -d) $(PY) manage.py makemigrations --check --dry-run
	promtool check rules docker/prometheus/alerts.yml
	promtool check config --syntax-only docker/prometheus/prometheus.yml

bench:
	$(PY) bench/overhead.py
	$(PY) bench/rhai_route.py
