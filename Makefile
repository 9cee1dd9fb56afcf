# Two commands set up everything on a fresh machine: `make synth` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CDK := node_modules/.bin/cdk
CONFIG ?= mirror.yaml
export PATH := $(CURDIR)/$(BIN):$(PATH)
export CDK_DISABLE_VERSION_CHECK := 1
export CDK_DISABLE_CLI_TELEMETRY := true
export JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION := 1

.PHONY: synth test lint bench simulate deploy docker-hub-token clean

$(BIN)/.runtime: requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -r requirements.txt
	touch $@

$(BIN)/.dev: $(BIN)/.runtime requirements-dev.txt
	$(BIN)/pip install -q --disable-pip-version-check -r requirements-dev.txt
	touch $@

node_modules/.installed: package.json
	npm install --no-audit --no-fund --loglevel=error
	touch $@

synth: $(BIN)/.runtime node_modules/.installed
	$(CDK) synth --quiet --no-notices -c mirror:config=$(CONFIG)

test: $(BIN)/.dev node_modules/.installed
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/pytest -q

lint: $(BIN)/.dev
	$(BIN)/ruff check .
	$(BIN)/mypy

bench: $(BIN)/.dev
	$(BIN)/python -m tests.bench

simulate: $(BIN)/.dev
	$(BIN)/python -m tests.simulate

deploy: $(BIN)/.runtime node_modules/.installed
	$(CDK) deploy --no-notices -c mirror:config=$(CONFIG)

# Reads the Docker Hub username and access token from stdin (never from arguments or the
# environment) and stores them in the secret the stack created.
docker-hub-token: $(BIN)/.runtime
	$(BIN)/python -m stacks.set_token --config $(CONFIG)

clean:
	rm -rf cdk.out
