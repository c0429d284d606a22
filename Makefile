# Kiln's two commands: `make run` (install what is missing, build, run the demo) and
# `make test` (build and pass the whole test suite). The rest wrap CMake.
BUILD ?= build
JOBS  ?= $(shell nproc)
PYTHON ?= python3

.PHONY: all deps build run test unit lit models conformance bench clean

all: build

deps:
	@scripts/install-deps.sh

$(BUILD)/CMakeCache.txt:
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null

build: deps $(BUILD)/CMakeCache.txt
	@cmake --build $(BUILD) -j $(JOBS)

run: build
	@scripts/demo.sh $(BUILD)

test: build
	@tests/run_all.sh $(BUILD)

conformance: build
	@$(BUILD)/kiln_conformance $(CONFORMANCE_ARGS)

bench: build
	@bench/run.sh $(BUILD)

clean:
	rm -rf $(BUILD)
