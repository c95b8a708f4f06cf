# make            lists the targets
# make run        installs what is missing, prepares the data folder, starts the whole platform
# make test       installs what is missing, runs every test (T=tests/path for a subset)

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Development installs the locked dev set (runtime + local + test tools); images install requirements/runtime.txt.
LOCK := requirements/dev.txt
STAMP := $(VENV)/.installed-$(shell cksum $(LOCK) | cut -d' ' -f1)
T ?= tests
WEB_SOURCES := $(shell find web/src web/public -type f 2>/dev/null) web/index.html web/vite.config.js web/package.json

.DEFAULT_GOAL := help
.PHONY: help install lock web web-dev run test lint migrate admin bench clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): $(LOCK)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --require-hashes -r $(LOCK)
	@rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP) web/node_modules/.package-lock.json ## install the locked Python (requirements/dev.txt) and web dependencies

# pyproject.toml names the direct dependencies; pip-tools resolves and hashes the rest.
COMPILE := CUSTOM_COMPILE_COMMAND="make lock" $(VENV)/bin/pip-compile --quiet --generate-hashes --strip-extras \
	--allow-unsafe --no-emit-index-url --no-emit-find-links
lock: $(STAMP) ## regenerate requirements/runtime.txt and requirements/dev.txt from pyproject.toml (pip-tools)
	$(COMPILE) --output-file requirements/runtime.txt pyproject.toml
	$(COMPILE) --extra local --extra dev --output-file requirements/dev.txt pyproject.toml

web/node_modules/.package-lock.json: web/package-lock.json
	cd web && npm ci --no-audit --no-fund

web/dist/index.html: web/node_modules/.package-lock.json $(WEB_SOURCES)
	cd web && npm run build

web: web/dist/index.html ## build the web client (only when its sources changed)

web-dev: web/node_modules/.package-lock.json ## run Vite with a proxy to the gateway on :8000 (make run first)
	cd web && npm run dev

run: $(STAMP) web ## start the whole platform on embedded defaults (Ctrl-C stops it)
	$(PY) -m deploy.local run

test: $(STAMP) web ## run every test: web unit tests, then pytest (T=tests/path for a subset)
	cd web && npm test
	$(PY) -m pytest $(T)

lint: $(STAMP) ## check the Python code with pyflakes
	$(PY) -m pyflakes services shared tests deploy bench clients

bench: $(STAMP) ## run the benchmarks and print their figures
	@for script in bench/[!_]*.py; do echo "== $$script"; $(PY) $$script || exit 1; done

migrate: $(STAMP) ## apply every service's database migrations
	$(PY) -m shared.migrate upgrade

admin: $(STAMP) ## create an administrator (USERNAME=... EMAIL=...; asks for the password)
	$(PY) -m flask --app services.auth.app:create_app auth create-admin $(USERNAME) $(EMAIL)

clean: ## remove the local data folder (databases, media, keys, logs)
	rm -rf var
