# predictd — GNU Makefile.
#
#   make run      install missing Debian packages, build, serve the bundled demo models
#   make test     install what the tests need, build, run every test (plain and ASan+UBSan)
#   make bench    performance figures against the peers (not part of `make test`)
#   make asan     the ASan+UBSan build in build-asan/
#   make install  PREFIX=/usr/local DESTDIR=

PREFIX  ?= /usr/local
DESTDIR ?=
BUILD   ?= build
CC      ?= cc

PKGS := libmicrohttpd jansson openblas libuv libutf8proc libpng libjpeg

PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)

# CFLAGS is the user's (optimisation, sanitizers); the language and warning
# flags are always added, so `make CFLAGS=...` cannot drop -Werror.
CFLAGS  ?= -O2 -g
BASE_CFLAGS := -std=c11 -D_GNU_SOURCE -pthread -Wall -Wextra -Werror -Wshadow \
               -Wno-missing-field-initializers -fno-strict-aliasing -MMD -MP
ALL_CFLAGS = $(BASE_CFLAGS) $(CFLAGS)
CPPFLAGS += -I. $(PKG_CFLAGS)
LDLIBS  += $(PKG_LIBS) -lm -pthread

# Everything except the daemon's main() goes into one static library that the
# daemon and the tests both link, so a test exercises exactly the shipped code.
LIB_SRC  := $(sort $(wildcard engine/*.c models/*.c server/*.c))
# EXCLUDE leaves out files still being written, e.g. make EXCLUDE=models/x.c
LIB_SRC  := $(filter-out server/main.c $(EXCLUDE),$(LIB_SRC))
TEST_SRC := $(filter-out $(EXCLUDE),$(sort $(wildcard tests/unit/*.c)))
LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/obj/%.o)
TEST_OBJ := $(TEST_SRC:%.c=$(BUILD)/obj/%.o)
MAIN_OBJ := $(BUILD)/obj/server/main.o
BENCH_SRC := $(sort $(wildcard tests/bench/*.c))
BENCH_BIN := $(BENCH_SRC:tests/bench/%.c=$(BUILD)/%)

.PHONY: all deps run-deps run test unit-test http-test test-deploy test-scale soak soak-test fuzz fuzz-smoke asan asan-test valgrind-test bench install clean

all: $(BUILD)/predictd $(BUILD)/unit_tests

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(ALL_CFLAGS) -c $< -o $@

# The SIMD kernels may take flags of their own: clang needs over 15 minutes
# for kernels_avx512.c with ASan, UBSan and fuzzer coverage together (seconds
# without), so the fuzz build leaves the sanitizers off there (the kernels
# are held to their C references under gcc's ASan+UBSan in make asan-test).
SIMD_OBJ := $(patsubst %.c,$(BUILD)/obj/%.o,$(wildcard engine/kernels_avx*.c engine/ops_simd.c))
KERNEL_CFLAGS ?= $(CFLAGS)
$(SIMD_OBJ): ALL_CFLAGS = $(BASE_CFLAGS) $(KERNEL_CFLAGS)

$(BUILD)/libpredictd.a: $(LIB_OBJ)
	@rm -f $@
	$(AR) rcs $@ $^

$(BUILD)/predictd: $(MAIN_OBJ) $(BUILD)/libpredictd.a
	$(CC) $(ALL_CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# The unit tests inject allocation failures (tests/unit/test_alloc_failure.c)
# through wrappers of the allocation functions predictd's own code calls.
WRAP_ALLOC := -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc,--wrap=strdup,--wrap=strndup,--wrap=posix_memalign

$(BUILD)/unit_tests: $(TEST_OBJ) $(BUILD)/libpredictd.a
	$(CC) $(ALL_CFLAGS) $(LDFLAGS) $(WRAP_ALLOC) -o $@ $^ $(LDLIBS)

# Each tests/bench/*.c is a program of its own.
$(BUILD)/%: $(BUILD)/obj/tests/bench/%.o $(BUILD)/libpredictd.a
	$(CC) $(ALL_CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# Installs the Debian packages the build and the tests need, when missing
# (run-deps: only what building and running need).
deps:
	@scripts/install-deps.sh test

run-deps:
	@scripts/install-deps.sh build

# Serves the three bundled demo models (config/predictd.example.json) on :8000.
run: run-deps
	@$(MAKE) --no-print-directory all
	$(BUILD)/predictd --config config/predictd.example.json

unit-test: $(BUILD)/unit_tests $(BUILD)/predictd
	$(BUILD)/unit_tests

http-test: $(BUILD)/predictd
	tests/http/run.sh $(BUILD)/predictd

# The deployment files (systemd unit, Docker image, Compose, nginx, Kubernetes)
# and a real nginx in front of predictd replicas; 127.0.0.1 only.
test-deploy: $(BUILD)/predictd
	tests/deploy/run.sh $(BUILD)/predictd

# Only the scale-out tests: SIGKILL a replica under load; requests/s with 1-3 replicas.
test-scale: $(BUILD)/predictd
	tests/deploy/scale.sh $(BUILD)/predictd

# Mixed traffic at 128 connections against all three model families: a minute
# in make test, ten with make soak.
soak-test: $(BUILD)/predictd
	tests/soak/run.sh $(BUILD)/predictd 60 128

soak: $(BUILD)/predictd
	tests/soak/run.sh $(BUILD)/predictd 600 128

# libFuzzer targets (tests/fuzz), built with clang into build-fuzz/; each runs
# from its seed corpus and the run closes with `N passed, N failed`.
FUZZ_SECONDS ?= 600

fuzz-smoke:
	FUZZ_JOBS=$$(nproc) tests/fuzz/run.sh 20

fuzz:
	FUZZ_JOBS=$$(nproc) tests/fuzz/run.sh $(FUZZ_SECONDS)

test: deps
	@$(MAKE) --no-print-directory all
	@$(MAKE) --no-print-directory unit-test
	@$(MAKE) --no-print-directory http-test
	@$(MAKE) --no-print-directory test-deploy
	@$(MAKE) --no-print-directory soak-test
	@$(MAKE) --no-print-directory asan-test
	@$(MAKE) --no-print-directory fuzz-smoke

ASAN_FLAGS := -O1 -g -fsanitize=address,undefined,float-cast-overflow -fno-omit-frame-pointer \
              -fno-sanitize-recover=undefined,float-cast-overflow

asan:
	@$(MAKE) --no-print-directory BUILD=build-asan CFLAGS="$(ASAN_FLAGS)" LDFLAGS="-fsanitize=address,undefined,float-cast-overflow" all

# OpenBLAS's own threads trip LeakSanitizer's thread bookkeeping at exit, not leaks of ours.
asan-test: asan
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 build-asan/unit_tests
	ASAN_OPTIONS=detect_leaks=1 tests/http/run.sh build-asan/predictd

# The HTTP suite with every daemon under valgrind's memcheck: no error, nothing
# definitely or indirectly lost at exit (tests/http/README.md). Much slower
# than http-test, so not part of make test. TEST=NAME: only the tests matching NAME.
VALGRIND := valgrind --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite,indirect \
            --show-leak-kinds=definite,indirect --fair-sched=yes --num-callers=30 \
            --suppressions=tests/http/valgrind.supp --log-file=$(BUILD)/valgrind/%p.log

valgrind-test: $(BUILD)/predictd
	rm -rf $(BUILD)/valgrind
	PREDICTD_TEST_WRAPPER="$(VALGRIND)" tests/http/run.sh $(BUILD)/predictd $(TEST)

bench: $(BUILD)/predictd $(BENCH_BIN)
	scripts/bench.sh $(BUILD)

$(BUILD)/predictd.8: $(BUILD)/predictd
	$(BUILD)/predictd --man > $@

install: $(BUILD)/predictd $(BUILD)/predictd.8
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/predictd \
	        $(DESTDIR)$(PREFIX)/share/man/man8 $(DESTDIR)$(PREFIX)/lib/systemd/system
	install -m 755 $(BUILD)/predictd $(DESTDIR)$(PREFIX)/bin/predictd
	install -m 644 $(BUILD)/predictd.8 $(DESTDIR)$(PREFIX)/share/man/man8/predictd.8
	install -m 644 config/predictd.example.json $(DESTDIR)$(PREFIX)/share/predictd/
	install -m 644 config/predictd.service $(DESTDIR)$(PREFIX)/lib/systemd/system/predictd.service

clean:
	rm -rf build build-asan build-fuzz

-include $(LIB_OBJ:.o=.d) $(TEST_OBJ:.o=.d) $(MAIN_OBJ:.o=.d) $(BENCH_SRC:%.c=$(BUILD)/obj/%.d)
