# The two commands a newcomer needs: `make run` and `make test`. Both set up .venv from the lock file.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
UV_VERSION := 0.13.9
UV := $(VENV)/bin/uv
BIN := $(VENV)/bin

# uv must use this machine's Python, never download one.
export UV_PYTHON_DOWNLOADS := never
export CDK_DISABLE_CLI_TELEMETRY := true
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 20

.PHONY: install infra-tools browser run test test-fast lint format typecheck bench bench-scale synth clean

$(VENV)/.synced: pyproject.toml uv.lock
	@test -x $(UV) || { $(PYTHON) -m venv $(VENV) && $(BIN)/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION); }
	$(UV) sync --frozen --all-groups
	@touch $@

install: $(VENV)/.synced

# The infra tests' tools, each pinned by a lock of its own: checkov (its pins clash with the project's)
# and the CDK CLI from npm.
CHECKOV_VENV := .venv-checkov
CDK_CLI := tests/infra/cdk-cli
$(CHECKOV_VENV)/.synced: tests/infra/checkov/pyproject.toml tests/infra/checkov/uv.lock $(VENV)/.synced
	UV_PROJECT_ENVIRONMENT=$(abspath $(CHECKOV_VENV)) $(UV) sync --frozen --project tests/infra/checkov
	@touch $@

$(CDK_CLI)/node_modules/.installed: $(CDK_CLI)/package.json $(CDK_CLI)/package-lock.json
	npm ci --prefix $(CDK_CLI) --no-audit --no-fund --silent
	@touch $@

infra-tools: $(CHECKOV_VENV)/.synced $(CDK_CLI)/node_modules/.installed

## run: set up, train offline on generated claims (first time only; RETRAIN=1 to retrain), serve on 127.0.0.1
run: install
	$(BIN)/claims-risk up $(if $(RETRAIN),--retrain,)

## test: lint, type-check and the whole test suite (unit, integration, infra, e2e)
test: install infra-tools browser lint typecheck
	$(BIN)/pytest

# The report test renders in headless Chromium. As root, install it from Debian if missing; otherwise
# that one test skips and says why.
browser:
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing chromium from Debian for the report test"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	      || echo "chromium could not be installed: the report test will skip"; \
	  else echo "no chromium and not root: the report test will skip"; fi; }

test-fast: install
	$(BIN)/pytest tests/unit

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

typecheck: install
	$(BIN)/mypy .

## bench: every benchmark; prints a table and writes benchmarks/results/*.json
bench: install
	$(BIN)/python -m benchmarks.run

## bench-scale: peak memory of validate, batch scoring, the drift job and training at 1M, 4M and 16M
## claims (about 40 minutes; BENCH_SCALE_SIZES=1e6,4e6 for fewer); writes benchmarks/results/scale.json
bench-scale: install
	$(BIN)/python -m benchmarks.run bench_scale

## synth: synthesize the stage's template into cdk.out (STAGE=prod for prod), as `cdk synth` would
synth: install
	$(BIN)/python app.py $(if $(STAGE),--context stage=$(STAGE),)

clean:
	rm -rf $(VENV) $(CHECKOV_VENV) $(CDK_CLI)/node_modules cdk.out .mypy_cache .ruff_cache .pytest_cache test-output
