# buzon build. `make` leaves the executable at build/buzon; `make check` builds and runs every test
# (unit tests, protocol tests, real clients) and then the whole suite again under ASan+UBSan.
# `make run` sets up a demo under ./run/ and serves it on 127.0.0.1:1110.

CC       ?= cc
PKGS     := libevent libevent_openssl libssl libcrypto libsodium inih libidn libseccomp libsystemd
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

.PHONY: all clean check check-unit check-tree check-asan check-valgrind run format tests bench-tools bench
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

# Mixed POP3 (plain and TLS) and LMTP load for DURATION seconds, then the mail invariants, the exit
# on SIGTERM and the memory curve; see scripts/soak.py. Prints `soak: N passed, M failed` last.
# RELOAD_EVERY: a SIGHUP (reload) every so many seconds under the load; 0 for none.
DURATION ?= 60
RELOAD_EVERY ?= 10
.PHONY: soak
soak: all bench-tools
	$(PYTHON) scripts/soak.py --build $(BUILD) --duration $(DURATION) --reload-every $(RELOAD_EVERY)

check-unit: $(UNIT_BIN)
	@fail=0; for t in $(UNIT_BIN); do echo "== $$t"; $$t || fail=1; done; exit $$fail

# Every test against one build tree (unit, protocol, real clients); see scripts/check.sh.
check-tree: all $(UNIT_BIN)
	./scripts/check.sh $(BUILD) $(if $(filter 1,$(SANITIZE)),asan,tests)

# ASan and UBSan stop at the first error; leaks are reported when each process exits.
check-asan:
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1 \
		$(MAKE) --no-print-directory SANITIZE=1 check-tree

# The whole suite again with every unit test, server and CLI command under valgrind memcheck; any
# error or definite/indirect leak fails. Slow (about 40 minutes), so it is run by hand, not by CI.
check-valgrind: all $(UNIT_BIN)
	BUZON_VALGRIND=1 UNIT_WRAPPER="valgrind --quiet --leak-check=full --show-leak-kinds=definite,indirect \
		--errors-for-leak-kinds=definite,indirect --error-exitcode=99" ./scripts/check.sh $(BUILD) valgrind

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

# libFuzzer targets (fuzz/fuzz_*.c, see fuzz/README.md): the library is compiled again with clang
# into build-fuzz/ with ASan+UBSan and fuzzer coverage. `make fuzz FUZZ_SECONDS=N FUZZ_JOBS=J` runs
# each target for N seconds, J at a time, on a copy of its corpus (scripts/fuzz.sh). -Werror holds
# here too: clang warns about some things gcc does not, and the code is kept clean for both.
FUZZ_BUILD   := build-fuzz
FUZZ_SAN     := -fsanitize=address,undefined -fno-sanitize-recover=undefined
FUZZ_BIN     := $(patsubst fuzz/%.c,$(FUZZ_BUILD)/%,$(wildcard fuzz/fuzz_*.c))
FUZZ_SECONDS ?= 60
FUZZ_JOBS    ?= 1

.PHONY: fuzz fuzz-build fuzz-binaries
fuzz-build:
	$(MAKE) --no-print-directory BUILD=$(FUZZ_BUILD) CC=clang \
		OPT="-O1 -g -fno-omit-frame-pointer" \
		HARDEN="-fsanitize=fuzzer-no-link $(FUZZ_SAN)" fuzz-binaries

fuzz-binaries: $(FUZZ_BIN)

$(FUZZ_BUILD)/fuzz_%: fuzz/fuzz_%.c $(wildcard fuzz/*.h) $(FUZZ_BUILD)/libbuzon.a
	$(CC) $(CFLAGS) $(LDFLAGS) -fsanitize=fuzzer $(FUZZ_SAN) -Ifuzz -o $@ $< \
		$(FUZZ_BUILD)/libbuzon.a $(PKG_LIBS)

fuzz: fuzz-build
	FUZZ_SECONDS=$(FUZZ_SECONDS) FUZZ_JOBS=$(FUZZ_JOBS) ./scripts/fuzz.sh $(FUZZ_BUILD)

# `make install PREFIX=/usr/local DESTDIR=`: the binary (a daemon and an admin tool, so sbin),
# the man pages, the example config, the systemd units and the tmpfiles.d entry; see README
# "Installing". SYSCONFDIR stays /etc whatever PREFIX is, because /etc/buzon/buzon.conf is the
# binary's default -c path; the unit runs `buzon serve -c $(SYSCONFDIR)/buzon/buzon.conf`.
# buzon.conf itself is never installed, so an existing one is never overwritten.
PREFIX      ?= /usr/local
SBINDIR     ?= $(PREFIX)/sbin
MANDIR      ?= $(PREFIX)/share/man
SYSCONFDIR  ?= /etc
UNITDIR     ?= $(PREFIX)/lib/systemd/system
TMPFILESDIR ?= $(PREFIX)/lib/tmpfiles.d
INSTALLED   := $(SBINDIR)/buzon $(MANDIR)/man8/buzon.8 $(MANDIR)/man5/buzon.conf.5 \
	       $(SYSCONFDIR)/buzon/buzon.conf.example $(UNITDIR)/buzon.service \
	       $(UNITDIR)/buzon.socket $(TMPFILESDIR)/buzon.conf

.PHONY: install uninstall man-lint
install: $(BUILD)/buzon
	install -D -m 0755 $(BUILD)/buzon $(DESTDIR)$(SBINDIR)/buzon
	install -D -m 0644 docs/buzon.8 $(DESTDIR)$(MANDIR)/man8/buzon.8
	install -D -m 0644 docs/buzon.conf.5 $(DESTDIR)$(MANDIR)/man5/buzon.conf.5
	install -D -m 0644 dist/buzon.conf.example $(DESTDIR)$(SYSCONFDIR)/buzon/buzon.conf.example
	install -d $(DESTDIR)$(UNITDIR)
	sed -e 's|@SBINDIR@|$(SBINDIR)|g' -e 's|@SYSCONFDIR@|$(SYSCONFDIR)|g' \
		dist/systemd/buzon.service.in >$(DESTDIR)$(UNITDIR)/buzon.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/buzon.service
	install -D -m 0644 dist/systemd/buzon.socket $(DESTDIR)$(UNITDIR)/buzon.socket
	install -D -m 0644 dist/tmpfiles.d/buzon.conf $(DESTDIR)$(TMPFILESDIR)/buzon.conf

# Leaves buzon.conf (and so its directory) in place.
uninstall:
	rm -f $(addprefix $(DESTDIR),$(INSTALLED))
	[ ! -d $(DESTDIR)$(SYSCONFDIR)/buzon ] || \
		rmdir --ignore-fail-on-non-empty $(DESTDIR)$(SYSCONFDIR)/buzon

# Both man pages must be free of mandoc warnings (tests/integration/test_packaging.py runs this).
man-lint:
	mandoc -T lint -W warning docs/buzon.8 docs/buzon.conf.5

format:
	clang-format -i $(wildcard src/*/*.c src/*/*.h tests/unit/*.c tests/unit/*.h)

clean:
	rm -rf build build-asan build-fuzz

-include $(LIB_OBJ:.o=.d) $(MAIN_OBJ:.o=.d)
