# buzon build. `make` leaves the executable at build/buzon; `make check` builds and runs every test
# (unit tests, protocol tests, real clients) and then the whole suite again under ASan+UBSan.
# `make run` sets up a demo under ./run/ and serves it on 127.0.0.1:1110.

CC       ?= cc
PKGS     := libevent libevent_openssl libssl libcrypto libsodium inih libidn
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lcrypt -lpthread

WARNINGS := -Wall -Wextra -Wpedantic -Wshadow -Wformat=2 -Wno-unused-parameter -Werror
HARDEN   := -fstack-protector-strong -fPIE -D_FORTIFY_SOURCE=3
OPT      ?= -O2 -g
CFLAGS   += -std=c17 -D_GNU_SOURCE $(OPT) $(WARNINGS) $(PKG_CFLAGS) -Isrc -MMD -MP
LDFLAGS  += -pie -Wl,-z,relro,-z,now

# BUILD selects the output tree so that the sanitizer build lives beside the normal one.
BUILD    ?= build
ifeq ($(SANITIZE),1)
  BUILD  := build-asan
  OPT    := -O1 -g -fno-omit-frame-pointer
  HARDEN := -fPIE
  CFLAGS += -fsanitize=address,undefined -fno-sanitize-recover=undefined
  LDFLAGS += -fsanitize=address,undefined
endif
CFLAGS += $(HARDEN)

LIB_SRC  := $(filter-out src/cli/main.c,$(wildcard src/*/*.c))
LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/obj/%.o)
MAIN_OBJ := $(BUILD)/obj/src/cli/main.o

UNIT_SRC := $(wildcard tests/unit/test_*.c)
UNIT_BIN := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)

PYTHON   ?= /usr/bin/python3

.PHONY: all clean check check-unit check-tree check-asan run format tests bench-tools bench
all: $(BUILD)/buzon

$(BUILD)/buzon: $(MAIN_OBJ) $(BUILD)/libbuzon.a
	$(CC) $(LDFLAGS) -o $@ $^ $(PKG_LIBS)

$(BUILD)/libbuzon.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c -o $@ $<

$(BUILD)/tests/%: tests/unit/%.c $(BUILD)/libbuzon.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -Itests/unit -o $@ $< $(BUILD)/libbuzon.a $(PKG_LIBS) -lcmocka

tests: $(UNIT_BIN)

# The POP3 load generator of the benchmarks (bench/loadgen.c; --help for its options).
bench-tools: $(BUILD)/bench/loadgen

$(BUILD)/bench/loadgen: bench/loadgen.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(PKG_LIBS)

# buzon against Dovecot (default and tuned) side by side; see bench/bench.py. Needs root.
# QUICK=1 is the CI smoke test (short runs, report in build/bench-quick/).
bench:
	$(PYTHON) bench/bench.py $(if $(filter 1,$(QUICK)),--quick)

check-unit: $(UNIT_BIN)
	@fail=0; for t in $(UNIT_BIN); do echo "== $$t"; $$t || fail=1; done; exit $$fail

# Every test against one build tree (unit, protocol, real clients); see scripts/check.sh.
check-tree: all $(UNIT_BIN)
	./scripts/check.sh $(BUILD) $(if $(filter 1,$(SANITIZE)),asan,tests)

# ASan and UBSan stop at the first error; leaks are reported when each process exits.
check-asan:
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1 \
		$(MAKE) --no-print-directory SANITIZE=1 check-tree

# The whole suite, then the same suite against the sanitizer build.
check:
	@summary=$$(mktemp); status=0; \
	CHECK_SUMMARY=$$summary $(MAKE) --no-print-directory check-tree || status=1; \
	CHECK_SUMMARY=$$summary $(MAKE) --no-print-directory check-asan || status=1; \
	awk '{p += $$1; f += $$2} END {printf "total: %d passed, %d failed\n", p, f}' $$summary; \
	rm -f $$summary; exit $$status

run:
	./scripts/install-deps.sh build
	$(MAKE) all
	./scripts/demo.sh

format:
	clang-format -i $(wildcard src/*/*.c src/*/*.h tests/unit/*.c tests/unit/*.h)

clean:
	rm -rf build build-asan

-include $(LIB_OBJ:.o=.d) $(MAIN_OBJ:.o=.d)
