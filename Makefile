# make test   builds everything under AddressSanitizer and UBSan, runs the tests and the demo
# make demo   runs the in-memory 5-replica example
# make quickstart   builds and runs examples/quickstart.cpp, the README's quick start
# make sim SEED=n   replays one simulator seed with a trace (SIM_TRACE=2: every message too)
# make fuzz   runs the libFuzzer target for decode (needs clang) for FUZZ_SECONDS
# make size   counts lines of code (cloc): the Replica, FileStorage and the wire, both files
# make web    builds build/web/, the visualizer in a browser page (examples/visualize/web)
CXX ?= g++
FLAGS := -std=c++17 -Wall -Wextra -Werror -g -I.
SAN := -O1 -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all
BUILD := build
TEST_SOURCES := $(wildcard tests/*.cpp)
SIM_SEEDS ?= 300
SIM_TRACE ?= 1
FUZZ_SECONDS ?= 60
FORMATTED := raft.hpp raft.cpp $(wildcard tests/*.cpp tests/*.hpp tests/fuzz/*.cpp examples/*.cpp)

.PHONY: test demo quickstart sim fuzz fuzz-if-clang deps format clean size

test: deps kv-deps
	@$(MAKE) --no-print-directory -j2 $(BUILD)/tests $(BUILD)/in-memory $(BUILD)/quickstart \
	  $(BUILD)/kv-server-asan $(BUILD)/visualize
	$(BUILD)/in-memory > $(BUILD)/in-memory.out && tail -n 1 $(BUILD)/in-memory.out
	$(BUILD)/quickstart > $(BUILD)/quickstart.out && tail -n 1 $(BUILD)/quickstart.out
	sed -n '/^```cpp$$/,/^```$$/p' README.md | sed '1d;$$d' | diff - examples/quickstart.cpp && \
	  echo "README: the quick start is examples/quickstart.cpp"
	@$(MAKE) --no-print-directory fuzz-if-clang FUZZ_SECONDS=10
	@if command -v clang-format >/dev/null; then clang-format --dry-run -Werror $(FORMATTED) && \
	  echo "clang-format: clean"; else echo "clang-format: not installed, not checked"; fi
	@$(MAKE) --no-print-directory kv-test
	@$(MAKE) --no-print-directory visualize-test
	@$(MAKE) --no-print-directory web-test
	SIM_SEEDS=$(SIM_SEEDS) $(BUILD)/tests

# As root, with clang++ present, libFuzzer is installed too, so that make test fuzzes decode.
deps:
	@if [ "$$(id -u)" = 0 ] && command -v clang++ >/dev/null; then \
	  v=$$(clang++ --version | sed -n 's/.*clang version \([0-9]*\).*/\1/p' | head -n 1); \
	  dpkg -s libfuzzer-$$v-dev >/dev/null 2>&1 || apt-get install -y -q libfuzzer-$$v-dev || \
	  { apt-get update -q && apt-get install -y -q libfuzzer-$$v-dev; } || true; fi
	@if [ ! -f /usr/include/doctest/doctest.h ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -q && apt-get install -y -q doctest-dev; \
	  else echo "doctest is missing: run 'sudo apt-get install doctest-dev'"; exit 1; fi; fi

$(BUILD)/raft.o: raft.cpp raft.hpp
	@mkdir -p $(BUILD)
	$(CXX) $(FLAGS) $(SAN) -c raft.cpp -o $@

# Each object depends on the headers it includes (-MMD), listed in its .d file.
$(BUILD)/test-objects/%.o: tests/%.cpp raft.hpp
	@mkdir -p $(BUILD)/test-objects
	$(CXX) $(FLAGS) $(SAN) -MMD -MP -c $< -o $@
-include $(wildcard $(BUILD)/test-objects/*.d)

$(BUILD)/tests: $(patsubst tests/%.cpp,$(BUILD)/test-objects/%.o,$(TEST_SOURCES)) $(BUILD)/raft.o
	$(CXX) $(FLAGS) $(SAN) $^ -o $@

$(BUILD)/%: examples/%.cpp $(BUILD)/raft.o
	$(CXX) $(FLAGS) $(SAN) $< $(BUILD)/raft.o -o $@

demo: $(BUILD)/in-memory
	$(BUILD)/in-memory

quickstart: $(BUILD)/quickstart
	$(BUILD)/quickstart

sim: deps $(BUILD)/tests
	SIM_SEED=$(SEED) SIM_TRACE=$(SIM_TRACE) $(BUILD)/tests -tc='*simulator*'

$(BUILD)/fuzz-wire: tests/fuzz/wire.cpp raft.cpp raft.hpp
	@mkdir -p $(BUILD)/fuzz-corpus
	clang++ -std=c++17 -g -O1 -I. -fsanitize=fuzzer,address,undefined $< raft.cpp -o $@

fuzz: $(BUILD)/fuzz-wire
	$(BUILD)/fuzz-wire -max_total_time=$(FUZZ_SECONDS) $(BUILD)/fuzz-corpus

fuzz-if-clang:
	@if command -v clang++ >/dev/null && $(MAKE) --no-print-directory $(BUILD)/fuzz-wire >/dev/null 2>&1; \
	then $(MAKE) --no-print-directory fuzz > $(BUILD)/fuzz.log 2>&1; status=$$?; \
	  tail -n 1 $(BUILD)/fuzz.log; exit $$status; \
	else echo "fuzz: skipped, clang++ with libFuzzer is not available"; fi

format:
	clang-format -i $(FORMATTED)

# Everything before the first ==== banner of each file is the Replica; after it, FileStorage and
# the wire format. Budgets: the Replica under 1000, both files together under 1300.
size:
	@command -v cloc >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get install -y -q cloc >/dev/null; }
	@mkdir -p $(BUILD)/size
	@for f in raft.hpp raft.cpp; do \
	  awk '/^\/\/ =====/{exit} {print}' $$f > $(BUILD)/size/replica-$$f; \
	  awk 'found{print} /^\/\/ =====/{found=1}' $$f > $(BUILD)/size/storage-and-wire-$$f; done
	@count() { cloc --quiet --csv --force-lang=C++ "$$@" | awk -F, '$$2=="SUM"{print $$5}'; }; \
	echo "Replica (both files, before the banners): $$(count $(BUILD)/size/replica-*) lines (budget 1000)"; \
	echo "FileStorage and the wire format:          $$(count $(BUILD)/size/storage-and-wire-*) lines"; \
	echo "raft.hpp and raft.cpp together:           $$(count raft.hpp raft.cpp) lines (budget 1300)"

clean:
	rm -rf $(BUILD)

# make bench   builds bench/ with -O2 -DNDEBUG (no sanitizers) and prints one table of figures
# make bench-etcd   its item 8 alone: examples/kv against a 3-member etcd, driven by wrk (as root,
#                   installs Debian's etcd-server and wrk); BENCH_SECONDS=n for n s per point
BENCH_FLAGS := -std=c++17 -O2 -DNDEBUG -g -Wall -Wextra -I. -pthread
# Items 7 and 8 measure examples/kv; their code lives beside it, in examples/kv/bench.
KV_BENCH := examples/kv/bench
BENCH_SOURCES := bench/bench.cpp $(KV_BENCH)/tcp.cpp $(KV_BENCH)/etcd.cpp
.PHONY: bench bench-etcd bench-deps
bench: $(BUILD)/bench $(BUILD)/kv-server bench-deps
	KV_SERVER=$(BUILD)/kv-server $(BUILD)/bench

bench-etcd: $(BUILD)/bench $(BUILD)/kv-server bench-deps
	KV_SERVER=$(BUILD)/kv-server $(BUILD)/bench 8

# etcd and wrk for item 8; without them (and not root) the item says how to get them, and is skipped.
bench-deps:
	@if ! command -v etcd >/dev/null || ! command -v wrk >/dev/null; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -q && apt-get install -y -q etcd-server wrk; \
	  else echo "bench: etcd or wrk is missing: 'sudo apt-get install etcd-server wrk' for item 8"; \
	  fi; fi

$(BUILD)/bench-raft.o: raft.cpp raft.hpp
	@mkdir -p $(BUILD)
	$(CXX) $(BENCH_FLAGS) -c raft.cpp -o $@

# bench.cpp runs the simulated cluster of tests/cluster.hpp, the one the tests use.
$(BUILD)/bench-objects/%.o: bench/%.cpp $(KV_BENCH)/*.hpp tests/cluster.hpp raft.hpp
	@mkdir -p $(BUILD)/bench-objects
	$(CXX) $(BENCH_FLAGS) -c $< -o $@

$(BUILD)/bench-objects/%.o: $(KV_BENCH)/%.cpp $(KV_BENCH)/*.hpp
	@mkdir -p $(BUILD)/bench-objects
	$(CXX) $(BENCH_FLAGS) -c $< -o $@

$(BUILD)/bench: $(patsubst %.cpp,$(BUILD)/bench-objects/%.o,$(notdir $(BENCH_SOURCES))) \
  $(BUILD)/bench-raft.o
	$(CXX) $(BENCH_FLAGS) $^ -o $@

# make kv        builds build/kv-server, the replicated key-value store of examples/kv, optimized
#                (-O2 -DNDEBUG, no sanitizers): the server of the walkthrough and of `make bench`
# make kv-test   its end-to-end test on build/kv-server-asan, the same server under AddressSanitizer
#                and UBSan: 3 servers on free ports, SIGKILL of the leader, bad input, reads
#                through read(), a leader transfer under load, membership changes
# Debian's cpp-httplib is a compiled library; pkg-config gives the macros it was built with, which
# change the layout of its classes, so they must be the same here.
KV_SOURCES := $(wildcard examples/kv/*.cpp)
FORMATTED += $(KV_SOURCES) $(wildcard examples/kv/*.hpp) $(BENCH_SOURCES) $(wildcard $(KV_BENCH)/*.hpp)
HTTPLIB_CFLAGS = $(shell pkg-config --cflags cpp-httplib)
HTTPLIB_LIBS = $(shell pkg-config --libs cpp-httplib)
.PHONY: kv kv-test kv-deps
kv: $(BUILD)/kv-server

kv-deps:
	@if [ ! -f /usr/include/httplib.h ] || ! command -v pkg-config >/dev/null; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -q && apt-get install -y -q libcpp-httplib-dev pkg-config; \
	  else echo "cpp-httplib is missing: run 'sudo apt-get install libcpp-httplib-dev pkg-config'"; exit 1; fi; fi

$(BUILD)/kv/%.o: examples/kv/%.cpp $(wildcard examples/kv/*.hpp) raft.hpp | kv-deps
	@mkdir -p $(BUILD)/kv
	$(CXX) $(FLAGS) $(SAN) -pthread $(HTTPLIB_CFLAGS) -c $< -o $@

$(BUILD)/kv-server-asan: $(patsubst examples/kv/%.cpp,$(BUILD)/kv/%.o,$(KV_SOURCES)) $(BUILD)/raft.o
	$(CXX) $(FLAGS) $(SAN) -pthread $^ $(HTTPLIB_LIBS) -o $@

$(BUILD)/kv-O2/%.o: examples/kv/%.cpp $(wildcard examples/kv/*.hpp) raft.hpp | kv-deps
	@mkdir -p $(BUILD)/kv-O2
	$(CXX) $(BENCH_FLAGS) -Werror $(HTTPLIB_CFLAGS) -c $< -o $@

$(BUILD)/kv-server: $(patsubst examples/kv/%.cpp,$(BUILD)/kv-O2/%.o,$(KV_SOURCES)) $(BUILD)/bench-raft.o
	$(CXX) $(BENCH_FLAGS) $^ $(HTTPLIB_LIBS) -o $@

kv-test: $(BUILD)/kv-server-asan
	python3 tests/kv/e2e.py $(BUILD)/kv-server-asan

# make visualize [SCENARIO=figure8] [ARGS=...]   the teaching visualizer of examples/visualize
# make visualize-test   runs every shipped scenario headless and checks its timeline page
VISUALIZE_SOURCES := $(wildcard examples/visualize/*.cpp)
FORMATTED += $(VISUALIZE_SOURCES) examples/visualize/visualize.hpp
.PHONY: visualize visualize-test
visualize: $(BUILD)/visualize
	$(BUILD)/visualize $(if $(SCENARIO),examples/visualize/scenarios/$(SCENARIO).scenario) $(ARGS)

$(BUILD)/visualize-objects/%.o: examples/visualize/%.cpp examples/visualize/visualize.hpp raft.hpp \
  tests/cluster.hpp
	@mkdir -p $(BUILD)/visualize-objects
	$(CXX) $(FLAGS) $(SAN) -c $< -o $@

$(BUILD)/visualize: $(patsubst examples/visualize/%.cpp,$(BUILD)/visualize-objects/%.o,$(VISUALIZE_SOURCES)) $(BUILD)/raft.o
	$(CXX) $(FLAGS) $(SAN) $^ -o $@

visualize-test: $(BUILD)/visualize
	sh tests/visualize/run.sh $(BUILD)/visualize

include examples/visualize/web.mk
