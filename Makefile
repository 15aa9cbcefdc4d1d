# govexchange — the two commands a fresh machine needs: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

CHROMIUM := /usr/bin/chromium
CJK_FONT := /usr/share/fonts/truetype/wqy/wqy-zenhei.ttc

.PHONY: demo test test-prod lint install browser wrk bench clean prod-up prod-down bytecode

# The dev and prod extras: the lake's object-store tests need moto and s3fs (the prod extra).
# Installed packages are compiled to bytecode once: where PYTHONDONTWRITEBYTECODE is set (this
# machine's CI), every `govx` and Airflow process would otherwise compile Airflow's and Great
# Expectations' sources again on import (~12 s of CPU per process).
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip uv
	$(BIN)/uv pip install --quiet --compile-bytecode --python $(BIN)/python -c constraints.txt \
		-e '.[dev,prod]'
	touch $(STAMP)

# The project's own modules, compiled before the processes that import them start (cheap; a
# changed file is compiled again here, or in memory by whoever imports it first).
bytecode: $(STAMP)
	@$(BIN)/python -m compileall -q connectors exchange license_store quality dags > /dev/null

install: $(STAMP)

demo: $(STAMP) bytecode
	$(BIN)/govx demo

lint: $(STAMP)
	$(BIN)/ruff check .

# The admin dashboard's browser test drives Debian's chromium through Playwright (Playwright's own
# browser download cannot run on an isolated network). Installed once, as root, through apt-get;
# elsewhere this only says why the test will skip (it fails instead under CI=true).
browser:
	@if [ -x $(CHROMIUM) ] && [ -f $(CJK_FONT) ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get update -q || echo "make browser: apt-get update failed, using the cached lists"; \
		apt-get install -y -q chromium fonts-wqy-zenhei \
			|| echo "make browser: could not install chromium; the browser test will not run"; \
	else \
		echo "make browser: $(CHROMIUM) is missing and apt-get cannot run as root here:"; \
		echo "  apt-get install -y chromium fonts-wqy-zenhei, or the browser test will skip"; \
	fi

test: $(STAMP) lint browser bytecode
	$(BIN)/pytest

# The intake lookup bench (bench/lookup.py) drives the API with Debian's wrk; installed once, as
# root, through apt-get; elsewhere the bench falls back to a slower asyncio client and says so.
wrk:
	@if command -v wrk >/dev/null 2>&1; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get update -q || echo "make wrk: apt-get update failed, using the cached lists"; \
		apt-get install -y -q wrk \
			|| echo "make wrk: could not install wrk; bench/lookup.py will use its asyncio client"; \
	else \
		echo "make wrk: wrk is missing and apt-get cannot run as root here:"; \
		echo "  apt-get install -y wrk, or bench/lookup.py will use its asyncio client"; \
	fi

bench: $(STAMP) wrk
	$(BIN)/python bench/sync.py
	$(BIN)/python bench/extract.py
	$(BIN)/python bench/lookup.py
	$(BIN)/python bench/replicate.py

# The production profile on this machine (docs/deploy.md): Airflow on two Celery workers, Redis,
# PostgreSQL stores, an S3 endpoint, the intake API. Settings: config/prod.env.example, or
# GOVX_PROD_ENV_FILE=your.env; state under $$GOVX_HOME/prod. `make prod-down` keeps the data;
# `$(BIN)/python -m exchange.prod down --drop-data` drops the databases too.
PROD_STAMP := $(VENV)/.installed-prod

$(PROD_STAMP): $(STAMP)
	$(BIN)/uv pip install --quiet --python $(BIN)/python -c constraints.txt -e '.[dev,prod]'
	touch $(PROD_STAMP)

# The production profile's own test (tests/prod, marker `prod`, ~4 min): CI runs it after
# `make test`, as a stage of its own; a plain `pytest` skips it.
test-prod: $(PROD_STAMP) bytecode
	$(BIN)/pytest -m prod tests/prod

prod-up: $(PROD_STAMP)
	$(BIN)/python -m exchange.prod up

prod-down:
	$(BIN)/python -m exchange.prod down

clean:
	rm -rf var .pytest_cache .ruff_cache
