# make            lists the targets
# make run        installs what is missing, prepares the data folder, starts the whole platform
# make test       installs what is missing, runs every test (T=tests/path for a subset)

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cksum requirements.txt | cut -d' ' -f1)
T ?= tests

.DEFAULT_GOAL := help
.PHONY: help install run test migrate admin clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): requirements.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	@rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP) ## create .venv and install the pinned Python dependencies

run: $(STAMP) ## start the whole platform on embedded defaults (Ctrl-C stops it)
	$(PY) -m deploy.local run

test: $(STAMP) ## run every test (T=tests/path for a subset)
	$(PY) -m pytest $(T)

migrate: $(STAMP) ## apply every service's database migrations
	$(PY) -m shared.migrate upgrade

admin: $(STAMP) ## create an administrator (USERNAME=... EMAIL=...; asks for the password)
	$(PY) -m flask --app services.auth.app:create_app auth create-admin $(USERNAME) $(EMAIL)

clean: ## remove the local data folder (databases, media, keys, logs)
	rm -rf var
