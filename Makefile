# tcpkit build. `make` builds build/tcpkit, build/libtcpkit.a and build/tcpkit.pc.
#   make serve          install missing packages, build, run `tcpkit serve`
#   make test           install missing packages, build under ASan+UBSan and under TSan,
#                       run every suite
#   make fuzz           run every fuzz harness for FUZZ_SECONDS each (default 60)
#   make bench          side-by-side benchmarks (bench/run.sh)
#   make certs          a throwaway test CA and certificates in $(BUILD)/certs (scripts/certs.sh)
#   make install        PREFIX=/usr/local DESTDIR=
# SAN=1 builds into build-san/ with AddressSanitizer and UndefinedBehaviorSanitizer.
# TSAN=1 builds into build-tsan/ with ThreadSanitizer (`make TSAN=1 tsan-build`:
# the binary and the threaded unit tests); it cannot be combined with SAN=1.
# Every build is hardened: see HARDEN below and docs/security.md#build-hardening.

VERSION := 0.1.0
PREFIX  ?= /usr/local
DESTDIR ?=
CC      ?= cc
PKGS    := jansson icu-uc libedit sqlite3 libssl libcrypto libzstd

ifeq ($(SAN)$(TSAN),11)
$(error SAN=1 and TSAN=1 cannot be combined: AddressSanitizer and ThreadSanitizer exclude each other)
endif
ifeq ($(SAN),1)
BUILD   ?= build-san
OPT     ?= -O1 -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
LDSAN   := -fsanitize=address,undefined
else ifeq ($(TSAN),1)
BUILD   ?= build-tsan
OPT     ?= -O1 -fsanitize=thread -fno-omit-frame-pointer
LDSAN   := -fsanitize=thread
else
BUILD   ?= build
OPT     ?= -O2
LDSAN   :=
endif

WARN     := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wvla -Werror

# Hardening, in every build (sanitizer builds included; each optimises, which
# _FORTIFY_SOURCE needs). Flags the compiler does not know for this target
# (-fcf-protection is x86 only) are left out rather than failing the build.
# _FORTIFY_SOURCE=3 needs GCC 12 or clang 9 and glibc 2.34; otherwise 2.
cc-option = $(shell $(CC) -Werror $(1) -c -x c /dev/null -o /dev/null 2>/dev/null && echo $(1))
FORTIFY := $(shell printf '\043include <string.h>\nint main(void) { return 0; }\n' | \
             $(CC) -O2 -Werror -D_FORTIFY_SOURCE=3 -x c - -o /dev/null 2>/dev/null && echo 3 || echo 2)
HARDEN_CPPFLAGS := -U_FORTIFY_SOURCE -D_FORTIFY_SOURCE=$(FORTIFY)
# A debugging build with OPT=-O0 goes without: fortification needs optimisation.
ifneq ($(filter -O0,$(OPT)),)
HARDEN_CPPFLAGS := -U_FORTIFY_SOURCE
endif
HARDEN_CFLAGS   := -fstack-protector-strong -fPIE $(call cc-option,-fstack-clash-protection) \
                   $(call cc-option,-fcf-protection)
HARDEN_LDFLAGS  := -pie -Wl,-z,relro,-z,now -Wl,-z,noexecstack

CPPFLAGS += -Iinclude -Isrc -D_GNU_SOURCE -DTK_VERSION=\"$(VERSION)\" $(HARDEN_CPPFLAGS)
CFLAGS   ?= -g
CFLAGS   += -std=c11 $(OPT) $(WARN) $(HARDEN_CFLAGS) -pthread \
            $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
LDLIBS   += $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lm -pthread
LDFLAGS  += $(LDSAN) $(HARDEN_LDFLAGS)

LIB_SRC := $(wildcard src/core/*.c src/net/*.c src/codec/*.c src/services/*.c src/tools/*.c)
CLI_SRC := $(wildcard src/cli/*.c)
LIB_OBJ := $(LIB_SRC:%.c=$(BUILD)/%.o)
CLI_OBJ := $(CLI_SRC:%.c=$(BUILD)/%.o)
UNIT_SRC := $(wildcard tests/unit/test_*.c)
UNIT_BIN := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)
FUZZ_SRC := $(wildcard fuzz/fuzz_*.c)
EXAMPLE_BIN := $(patsubst examples/%.c,$(BUILD)/examples/%,$(wildcard examples/*.c))
# The unit tests that run several threads (cross-thread posting, metric slots,
# the connection pool, the scrypt helper): the ThreadSanitizer suite runs these.
TSAN_UNIT := test_timer test_metrics test_pool test_chat_kdf

.PHONY: all deps serve test unit e2e unit-build tsan-build fuzz fuzz-build bench certs install \
        uninstall clean format check-format

all: $(BUILD)/tcpkit $(BUILD)/libtcpkit.a $(BUILD)/tcpkit.pc $(EXAMPLE_BIN)

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/libtcpkit.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/tcpkit: $(CLI_OBJ) $(BUILD)/libtcpkit.a
	$(CC) $(LDFLAGS) -o $@ $(CLI_OBJ) $(BUILD)/libtcpkit.a $(LDLIBS)

$(BUILD)/tcpkit.pc: tcpkit.pc.in Makefile
	@mkdir -p $(BUILD)
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@VERSION@|$(VERSION)|' tcpkit.pc.in > $@

$(BUILD)/tests/%: tests/unit/%.c $(BUILD)/libtcpkit.a
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(LDFLAGS) -o $@ $< $(BUILD)/libtcpkit.a $(LDLIBS) -lcmocka

# Examples build against the library exactly as a user's program would.
$(BUILD)/examples/%: examples/%.c $(BUILD)/libtcpkit.a
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(LDFLAGS) -o $@ $< $(BUILD)/libtcpkit.a $(LDLIBS)

deps:
	@scripts/deps.sh build

# The quick start: build and run the main job on its default loopback ports.
serve:
	@scripts/deps.sh build
	@$(MAKE) --no-print-directory all
	./$(BUILD)/tcpkit serve

# Every suite under ASan+UBSan, and the threaded ones under ThreadSanitizer;
# the last line is "N passed, N failed".
test:
	@scripts/deps.sh test
	@$(MAKE) --no-print-directory SAN=1 all unit-build
	@$(MAKE) --no-print-directory TSAN=1 tsan-build
	@tests/run_all.sh build-san

unit-build: $(UNIT_BIN)

# With TSAN=1: the threaded unit tests and the binary (for one e2e scenario).
tsan-build: $(TSAN_UNIT:%=$(BUILD)/tests/%) $(BUILD)/tcpkit

fuzz:
	@scripts/deps.sh fuzz
	@FUZZ_SECONDS=$${FUZZ_SECONDS:-60} fuzz/run.sh

bench:
	@scripts/deps.sh bench
	@$(MAKE) --no-print-directory all
	@bench/run.sh

# Test certificates for trying the TLS options (fresh keys on every run).
certs:
	@scripts/certs.sh $(BUILD)/certs

install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/lib/pkgconfig $(DESTDIR)$(PREFIX)/include/tcpkit
	install -m 755 $(BUILD)/tcpkit $(DESTDIR)$(PREFIX)/bin/tcpkit
	install -m 644 $(BUILD)/libtcpkit.a $(DESTDIR)$(PREFIX)/lib/libtcpkit.a
	install -m 644 $(BUILD)/tcpkit.pc $(DESTDIR)$(PREFIX)/lib/pkgconfig/tcpkit.pc
	install -m 644 include/tcpkit/*.h $(DESTDIR)$(PREFIX)/include/tcpkit/

uninstall:
	rm -f $(DESTDIR)$(PREFIX)/bin/tcpkit $(DESTDIR)$(PREFIX)/lib/libtcpkit.a \
	      $(DESTDIR)$(PREFIX)/lib/pkgconfig/tcpkit.pc
	rm -rf $(DESTDIR)$(PREFIX)/include/tcpkit

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

check-format:
	clang-format --dry-run -Werror $$(git ls-files '*.c' '*.h')

clean:
	rm -rf build build-san build-tsan build-fuzz

-include $(LIB_OBJ:.o=.d) $(CLI_OBJ:.o=.d)
