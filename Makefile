# Kiln's two commands: `make run` (install what is missing, build, run the demo) and
# `make test` (build and pass the whole test suite). The rest wrap CMake.
BUILD ?= build
JOBS  ?= $(shell nproc)
PYTHON ?= python3

.PHONY: all deps build run test test-tsan unit lit models conformance conformance-py pytest bench bench-fusion clean fuzz-graphs

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

# ThreadSanitizer over the concurrency tests (one executable run from many threads, the
# thread pool, GEMM threading), in their own build folder: cmake -DKILN_TSAN=ON.
# The list is KILN_TSAN_TESTS in CMakeLists.txt.
BUILD_TSAN ?= build-tsan
test-tsan: deps
	@cmake -S . -B $(BUILD_TSAN) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DKILN_TSAN=ON >/dev/null
	@cmake --build $(BUILD_TSAN) -j $(JOBS) --target kiln_tsan_tests
	@tests/run_tsan.sh $(BUILD_TSAN) $$(cat $(BUILD_TSAN)/tsan_tests.txt)

conformance: build
	@$(BUILD)/kiln_conformance $(CONFORMANCE_ARGS)

# The Python package (python/kiln) from the checkout: PYTHONPATH and KILN_LIBRARY, nothing
# installed. `make pytest` runs its tests (also part of `make test`); `make conformance-py`
# runs every case of ONNX's own backend runner on kiln.backend (tests in parallel with
# pytest-xdist when installed) and, like `make conformance`, ends with each failed case
# and its reason, the counts per test class and the total (onnx-backend: N passed, N
# failed, N skipped), and succeeds whatever cases fail.
PYTEST = KILN_BUILD_DIR=$(abspath $(BUILD)) KILN_LIBRARY=$(abspath $(BUILD))/lib/libkiln.so PYTHONPATH=python \
	$(PYTHON) -m pytest -p no:cacheprovider
XDIST = $(shell $(PYTHON) -c 'import xdist' 2>/dev/null && printf -- '-n %s' $(JOBS))
pytest: build
	@$(PYTEST) -q -rfEs python/tests $(PYTEST_ARGS)

conformance-py: build
	@KILN_ONNX_BACKEND=all $(PYTEST) -q -rs --tb=no $(XDIST) python/tests/test_onnx_backend.py $(PYTEST_ARGS); \
	  rc=$$?; [ $$rc -le 1 ] || exit $$rc

# Differential fuzzing of the compiler against the interpreter (tests/unit/test_e2e_random.c)
# with many more random graphs than `make test`, from a time-based seed unless
# KILN_FUZZ_SEED is given: make fuzz-graphs KILN_FUZZ_GRAPHS=20000 KILN_FUZZ_SEED=123
# (KILN_FUZZ_CONV=1 in the environment: conv-heavy graphs, for the channels-last layout)
KILN_FUZZ_GRAPHS ?= 5000
KILN_FUZZ_SEED ?= $(shell date +%s)
fuzz-graphs: build
	@echo "fuzz-graphs: $(KILN_FUZZ_GRAPHS) graphs from seed $(KILN_FUZZ_SEED)"
	@KILN_FUZZ_GRAPHS=$(KILN_FUZZ_GRAPHS) KILN_FUZZ_SEED=$(KILN_FUZZ_SEED) \
	  $(BUILD)/tests/test_e2e_random --jobs $(JOBS) --color=never

bench: build
	@bench/run.sh $(BUILD)

# Issue 3's fusion benchmark: the example models at each fusion level and the memory-bound
# microbenchmarks vs copy bandwidth and ONNX Runtime, into bench/results/fusion-DATE.md
# (+ .png; matplotlib is pip-installed for the chart if missing).
bench-fusion: build
	@$(PYTHON) bench/fusion.py $(BUILD) --install-matplotlib

clean:
	rm -rf $(BUILD)
