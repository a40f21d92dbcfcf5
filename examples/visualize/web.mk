# The visualizer in a browser: `make web` builds build/web/, a page that runs the visualizer's own
# simulation (simulation.cpp, scenario.cpp and raft.cpp) compiled to WebAssembly with emcc. The
# folder works offline, opened from the file system: index.html, page.js, and simulation.js with
# the WebAssembly and the shipped scenarios inside it.
# make web        builds it (as root, installs Debian's emscripten and node-acorn if missing)
# make web-test   plays it in headless Chromium (tests/visualize/web.js); skipped without Chromium
WEB := $(BUILD)/web
WEB_SOURCES := raft.cpp examples/visualize/simulation.cpp examples/visualize/scenario.cpp \
  examples/visualize/terminal.cpp examples/visualize/web/bridge.cpp
WEB_EXPORTS := _web_scenarios,_web_load,_web_advance,_web_step,_web_command,_web_state
WEB_EXPORTS := $(WEB_EXPORTS),_web_term_colour,_web_take_pause
# Debian's emcc 3.1.6 runs acorn from node for its -O2 pass.
EMCC := NODE_PATH=/usr/share/nodejs emcc
FORMATTED += examples/visualize/web/bridge.cpp
.PHONY: web web-deps web-test

web: web-deps $(WEB)/index.html $(WEB)/page.js $(WEB)/simulation.js

web-deps:
	@if ! command -v emcc >/dev/null || [ ! -d /usr/share/nodejs/acorn ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -q && apt-get install -y -q emscripten node-acorn; \
	  else echo "emscripten is missing: run 'sudo apt-get install emscripten node-acorn'"; exit 1; fi; fi

$(WEB)/simulation.js: $(WEB_SOURCES) raft.hpp examples/visualize/visualize.hpp tests/cluster.hpp \
  $(wildcard examples/visualize/scenarios/*.scenario) | web-deps
	@mkdir -p $(WEB)
	$(EMCC) -std=c++17 -O2 -I. -fexceptions $(WEB_SOURCES) -o $@ -sSINGLE_FILE=1 \
	  -sALLOW_MEMORY_GROWTH=1 -sENVIRONMENT=web,node -sEXPORTED_FUNCTIONS=$(WEB_EXPORTS) \
	  -sEXPORTED_RUNTIME_METHODS=ccall,cwrap,FS \
	  --embed-file examples/visualize/scenarios@/scenarios

$(WEB)/%: examples/visualize/web/%
	@mkdir -p $(WEB)
	cp $< $@

# The browser test needs build/visualize too: the page's narration must be the terminal's. It is
# skipped, with a message, without Chromium, or without emcc when it cannot be installed.
WEB_SKIP := $(shell if [ ! -x /usr/bin/chromium ]; then \
  echo "/usr/bin/chromium is not installed (apt-get install chromium)"; \
  elif ! command -v emcc >/dev/null && [ "$$(id -u)" != 0 ]; then \
  echo "emcc is not installed (apt-get install emscripten node-acorn)"; fi)
ifeq ($(WEB_SKIP),)
web-test: web $(BUILD)/visualize
	node tests/visualize/web.js $(WEB) $(BUILD)/visualize
else
web-test:
	@echo "web-test: skipped, $(WEB_SKIP)"
endif
