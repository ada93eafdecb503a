# Hooker: the two commands in the README start here.
#   make          build hookerd and hookerctl
#   make demo     install what is missing, build, run the two-host demo
#   make test     install what is missing, build, run every test
#   make test-sanitize   hookerd and the unit tests under ASan+UBSan (build-san)
#   make bench / make bench-quick   the benchmark suite (bench/)
BUILD ?= build
MAKEFLAGS += --no-print-directory
PYTEST = /usr/bin/python3 -m pytest
# Sets up or checks what the machine must give (README), then runs the command.
CHECK = bash scripts/check-machine.sh

.PHONY: all deps build demo test test-sanitize test-unit test-e2e bench bench-quick clean

all: build

deps:
	@bash scripts/install-deps.sh

build: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	@cmake --build $(BUILD) -j2

demo: build
	@HOOKER_BUILD=$(abspath $(BUILD)) $(CHECK) /usr/bin/python3 scripts/demo.py

test: build
	@$(CHECK) bash scripts/test.sh $(BUILD)

test-sanitize: deps
	@$(CHECK) bash scripts/test-sanitize.sh build-san

bench: build
	@$(CHECK) bash bench/run.sh $(BUILD) full

bench-quick: build
	@$(CHECK) bash bench/run.sh $(BUILD) quick

clean:
	rm -rf $(BUILD) build-san
