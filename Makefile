# The two commands of the README: `make demo` and `make test`. Both set everything up first.
SHELL := /bin/bash

.PHONY: setup demo demo-blue-green test unit mutants behaviour bench clean

setup:
	bash scripts/setup.sh

demo: setup
	bash scripts/demo.sh

demo-blue-green: setup
	bash scripts/demo-blue-green.sh

test: setup
	bash scripts/test.sh

unit: setup
	bash scripts/test.sh unit

mutants: setup
	bash scripts/test.sh mutants

bench: setup
	bash scripts/bench.sh

clean:
	rm -rf .build demo-output tests/output
