# The two commands of the README: `make demo` and `make test`. Both set everything up first.
SHELL := /bin/bash

.PHONY: setup demo test unit behaviour bench clean

setup:
	bash scripts/setup.sh

demo: setup
	bash scripts/demo.sh

test: setup
	bash scripts/test.sh

unit: setup
	bash scripts/test.sh unit

bench: setup
	bash scripts/bench.sh

clean:
	rm -rf .build demo-output tests/output
