# dscada — `make demo` runs the end-to-end demonstration, `make test` runs the suite. Both create .venv first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint proto bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	@echo "Installing dscada and its dependencies into $(VENV) (about a minute the first time)..."
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/dscada demo

# tshark for the wire-level tests: installed when missing; as root (CI) it can always capture, so there those tests
# must not skip.
test: $(STAMP)
	@.ci/ensure-tshark
	$(BIN)/ruff check .
	DSCADA_WIRE_REQUIRED=$$([ "$$(id -u)" = 0 ] && echo 1) $(BIN)/python -m pytest -q -p no:cacheprovider

lint: $(STAMP)
	$(BIN)/ruff check .

# Regenerate the committed gRPC/protobuf code from scada/api/protos/scada.proto and dms/api/protos/*.proto.
proto: $(STAMP)
	$(BIN)/python -m scada.api.codegen
	$(BIN)/python -m dms.api.codegen

bench: $(STAMP)
	$(BIN)/python benchmarks/update_latency.py --json benchmarks/results/update_latency.json
	$(BIN)/python benchmarks/fleet_budget.py --json benchmarks/results/fleet_budget.json \
		--png benchmarks/results/fleet_budget.png

clean:
	rm -rf $(VENV) var build *.egg-info
