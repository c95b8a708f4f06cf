# make            lists the targets
# make run        installs what is missing, prepares the data folder, starts the whole platform
# make test       installs what is missing, runs every test (T=tests/path for a subset)

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cksum requirements.txt | cut -d' ' -f1)
T ?= tests
WEB_SOURCES := $(shell find web/src web/public -type f 2>/dev/null) web/index.html web/vite.config.js web/package.json

.DEFAULT_GOAL := help
.PHONY: help install web web-dev run test lint migrate admin bench clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): requirements.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	@rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP) web/node_modules/.package-lock.json ## install the pinned Python and web dependencies

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
