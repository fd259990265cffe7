# luacomm — build, test, install. Non-recursive; dependencies via pkg-config.
PREFIX   ?= /usr/local
CC       ?= cc
CFLAGS   ?= -O2 -g
PKGS     := lua5.4 libevent_core libevent_extra libevent_openssl libssl libcrypto
WARN     := -Wall -Wextra -Wpedantic -Wshadow -Wundef -Wwrite-strings \
            -Wmissing-prototypes -Wstrict-prototypes -Wold-style-definition
CPPFLAGS += -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE -Ibindings -Iruntime \
            $(shell pkg-config --cflags $(PKGS))
ALL_CFLAGS = -std=c11 $(WARN) $(CFLAGS) -MMD -MP
# The core and the host never link OpenSSL: TLS and crypto are the
# luacomm.tls module (bindings/tlsmod.h), loaded on first use, so a plain
# process does not map libssl/libcrypto (about 1.7 MiB of RSS).
LIBEVENT := $(shell pkg-config --libs libevent_core libevent_extra)
TLSLIBS  := $(shell pkg-config --libs libevent_core libevent_openssl libssl libcrypto)
LUALIBS  := $(shell pkg-config --libs lua5.4)

LUA_SHARE = $(PREFIX)/share/lua/5.4
LUA_LIB   = $(PREFIX)/lib/lua/5.4
BINDIR    = $(PREFIX)/bin
MANDIR    = $(PREFIX)/share/man
DOCDIR    = $(PREFIX)/share/doc/luacomm

BIND := bindings/core.c bindings/object.c bindings/sched.c bindings/timer.c bindings/cond.c \
        bindings/addr.c bindings/resolve.c bindings/conn.c bindings/listener.c bindings/udp.c \
        bindings/tlsload.c bindings/http.c bindings/limits.c bindings/guard.c
TLS  := bindings/tls_mod.c bindings/tls.c bindings/tls_conn.c bindings/tls_http.c bindings/crypto.c
HOST := $(wildcard runtime/*.c)

# B selects a build flavour: "" (release) or "asan" (ASan + UBSan).
B    ?=
OUT  := build$(if $(B),-$(B))
ifeq ($(B),asan)
CFLAGS := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined
LDFLAGS += -fsanitize=address,undefined
endif
ifeq ($(B),werror)
CFLAGS := -O2 -g -Werror
endif

all: $(OUT)/lib/luacomm/core.so $(OUT)/lib/luacomm/tls.so $(OUT)/luacomm

$(OUT)/pic/%.o: %.c
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(ALL_CFLAGS) -fPIC -c $< -o $@
$(OUT)/obj/%.o: %.c
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(ALL_CFLAGS) -DLC_SHARE_DIR='"$(LUA_SHARE)"' -DLC_LIB_DIR='"$(LUA_LIB)"' -c $< -o $@

# The module links libevent but never liblua: it uses the interpreter's Lua.
$(OUT)/lib/luacomm/core.so: $(BIND:%.c=$(OUT)/pic/%.o)
	@mkdir -p $(@D)
	$(CC) -shared $(LDFLAGS) -o $@ $^ $(LIBEVENT)

# luacomm.tls, for the host and core.so alike (found on the cpath). Never
# unloaded (-z nodelete): sessions and its context state may outlive the
# package library's unloading at lua_close.
$(OUT)/lib/luacomm/tls.so: $(TLS:%.c=$(OUT)/pic/%.o)
	@mkdir -p $(@D)
	$(CC) -shared $(LDFLAGS) -Wl,-z,nodelete -o $@ $^ $(TLSLIBS)

$(OUT)/luacomm: $(HOST:%.c=$(OUT)/obj/%.o) $(BIND:%.c=$(OUT)/obj/%.o)
	@mkdir -p $(@D)
	$(CC) $(LDFLAGS) -o $@ $^ $(LUALIBS) $(LIBEVENT) -lm

deps:
	@sh tools/install-deps.sh

# The specs: busted on lua5.4 against this build's module and host.
BUSTED := lua5.4 /usr/bin/busted
ifeq ($(B),asan)
# lua5.4 itself is not instrumented: preload the runtimes for the module.
# Leak checking is on: the host processes the specs start are checked too.
TEST_ENV := LD_PRELOAD="$$($(CC) -print-file-name=libasan.so) $$($(CC) -print-file-name=libubsan.so)" \
            ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
endif

test: deps
	@$(MAKE) --no-print-directory all
	$(TEST_ENV) LUACOMM_BIN=$(OUT)/luacomm $(BUSTED) --cpath='$(OUT)/lib/?.so' $(SPECS)

# The simulation scenarios over 1000 seeds each (`make test` runs them
# over 50): CONTRACT §10 used on the node library and the cluster example.
test-sim: deps
	@$(MAKE) --no-print-directory all
	LUACOMM_SIM_SEEDS=1000 LUACOMM_BIN=$(OUT)/luacomm $(BUSTED) --cpath='$(OUT)/lib/?.so' spec/sim

# The multi-host specs (spec/hosts) on network-namespace test hosts:
# needs root, ip and nft; says why and skips where they are missing.
test-hosts: deps
	@$(MAKE) --no-print-directory all
	OUT=$(OUT) sh tools/test-hosts.sh

# The same suite against the ASan + UBSan build.
test-asan:
	@$(MAKE) --no-print-directory B=asan test

# Lint: every Lua file through luacheck (.luacheckrc), the C through
# clang-format (.clang-format: one style for bindings/ and runtime/), and the
# C built with -Werror (warnings are errors in CI, not in release builds).
check: deps
	luacheck -q scripts spec tools examples bench fuzz
	clang-format --dry-run -Werror $(BIND) $(TLS) $(HOST) bindings/*.h runtime/*.h
	@$(MAKE) --no-print-directory B=werror all

# The examples under valgrind, with traffic and signals: nothing may be found.
valgrind: deps
	@$(MAKE) --no-print-directory all
	@command -v valgrind >/dev/null || apt-get install -y -qq valgrind >/dev/null
	lua5.4 tools/valgrind_examples.lua

demo: deps
	@$(MAKE) --no-print-directory all
	@lua5.4 tools/demo.lua

# The HTTP gateway of examples/http in front of the cluster, driven by curl.
demo-http: deps
	@$(MAKE) --no-print-directory all
	@lua5.4 tools/demo_http.lua

# Every .lua under scripts/ keeps its path below share/lua/5.4.
LUA_FILES := $(shell find scripts -name '*.lua')
# install-rock: the command and the modules (what luarocks installs, see
# the rockspec); install adds the man page, the docs and the examples.
install-rock: all
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(LUA_LIB)/luacomm
	install -m 755 $(OUT)/luacomm $(DESTDIR)$(BINDIR)/luacomm
	for f in $(LUA_FILES:scripts/%=%); do \
	  install -D -m 644 scripts/$$f $(DESTDIR)$(LUA_SHARE)/$$f || exit 1; \
	done
	install -m 755 $(OUT)/lib/luacomm/core.so $(DESTDIR)$(LUA_LIB)/luacomm/core.so
	install -m 755 $(OUT)/lib/luacomm/tls.so $(DESTDIR)$(LUA_LIB)/luacomm/tls.so

DOC_FILES := README.md CHANGELOG.md $(wildcard docs/*.md) $(shell find examples -type f)
install: install-rock
	install -D -m 644 docs/luacomm.1 $(DESTDIR)$(MANDIR)/man1/luacomm.1
	for f in $(DOC_FILES); do \
	  install -D -m 644 $$f $(DESTDIR)$(DOCDIR)/$$f || exit 1; \
	done

include bench/bench.mk
include fuzz/fuzz.mk

# Speed against C in the same run: the ceiling, the floor (one malloc and
# copy per frame), examples/echo.lua and echo servers on the Lua runtimes
# luv, cqueues and copas (bench/peers/), under one load generator,
# interleaved, medians, ratios; bench/RESULTS.md. Debian's copas.lua is
# installed for 5.1/5.2 only; it is pure Lua and runs on lua5.4 from there.
COPAS_PATH := ;;/usr/share/lua/5.1/?.lua
BENCH_SERVERS := 'ceiling=build/bench/ceiling $$PORT' 'floor=build/bench/floor $$PORT' \
	'luacomm=build/luacomm examples/echo.lua $$PORT' \
	'luv=lua5.4 bench/peers/luv_echo.lua $$PORT' \
	'cqueues=lua5.4 bench/peers/cqueues_echo.lua $$PORT' \
	'copas=env LUA_PATH="$(COPAS_PATH)" lua5.4 bench/peers/copas_echo.lua $$PORT'
# Copas 1.1.7 waits with select(): no descriptor past FD_SETSIZE (1024).
BENCH_ENV := SKIP='copas:E:select()_limit_1024_fds copas:idle:select()_limit_1024_fds'
# The same over TLS (scenarios A, C, D and H: full handshakes per second),
# against ceiling_tls, appended to the same report.
BENCH_CERT := build/bench/tls/cert.pem build/bench/tls/key.pem
BENCH_TLS_SERVERS := 'ceiling_tls=build/bench/ceiling_tls $$PORT $(BENCH_CERT)' \
                     'luacomm_tls=build/luacomm examples/echo.lua $$PORT $(BENCH_CERT)'
BENCH_TLS_ENV := TITLE="Echo over TLS" BENCH_SCENARIOS="A C D H" LOADGEN_EXTRA=--tls IDLE_CONNS=0 APPEND=1
# HTTP rows: wrk against nginx, the C-only evhttp floor and http.serve (bench/http.sh).
bench: deps
	@sh tools/install-deps.sh bench
	@$(MAKE) --no-print-directory all $(BENCH_BINS)
	$(BENCH_ENV) BENCH_NO_BUILD=1 bash bench/run.sh $(BENCH_SERVERS)
	BENCH_NO_BUILD=1 $(BENCH_TLS_ENV) bash bench/run.sh $(BENCH_TLS_SERVERS)
	lua5.4 bench/node_rr.lua 3 64 3 | lua5.4 bench/node_report.lua | tee -a bench/RESULTS.md
	bash bench/http.sh
	lua5.4 bench/sim_rate.lua | tee -a bench/RESULTS.md

bench-quick: deps
	@$(MAKE) --no-print-directory all $(BENCH_BINS)
	$(BENCH_ENV) QUICK=1 IDLE_CONNS=2000 BENCH_NO_BUILD=1 OUT=build/bench/RESULTS-quick.md bash bench/run.sh $(BENCH_SERVERS)
	QUICK=1 BENCH_NO_BUILD=1 OUT=build/bench/RESULTS-quick.md $(BENCH_TLS_ENV) bash bench/run.sh $(BENCH_TLS_SERVERS)
	lua5.4 bench/node_rr.lua 1 64 1 | lua5.4 bench/node_report.lua | tee -a build/bench/RESULTS-quick.md
	QUICK=1 OUT=build/bench/RESULTS-quick.md bash bench/http.sh
	lua5.4 bench/sim_rate.lua 5 | tee -a build/bench/RESULTS-quick.md

# Instructions per echoed message (callgrind, a fixed number of frames per
# scenario): luacomm's echo example and the floor, stable on a busy machine.
# A markdown table on stdout (append it to bench/RESULTS.md after make bench).
bench-callgrind: deps
	@$(MAKE) --no-print-directory all $(BENCH_BINS)
	@bash bench/callgrind.sh >build/bench/callgrind.luacomm
	@SERVER='build/bench/floor $$PORT' bash bench/callgrind.sh >build/bench/callgrind.floor
	@echo; echo '## Instructions per echoed message (callgrind, `make bench-callgrind`)'; echo
	@echo '| scenario | luacomm | floor | luacomm / floor |'; echo '|---|--:|--:|--:|'
	@for f in luacomm floor; do \
	  sed 's/.*scen=\([A-E]\).*ir_per_msg=\([0-9]*\).*/\1 \2/' build/bench/callgrind.$$f >build/bench/callgrind.$$f.col; \
	done
	@join build/bench/callgrind.luacomm.col build/bench/callgrind.floor.col | \
	  awk '{ printf "| %s | %d | %d | %.1f |\n", $$1, $$2, $$3, $$2 / $$3 }'

clean:
	rm -rf build build-asan build-werror build-fuzz

-include $(shell find build build-asan build-werror build-fuzz -name '*.d' 2>/dev/null)
.PHONY: all deps check test test-sim test-hosts test-asan valgrind demo demo-http install install-rock clean bench bench-quick bench-callgrind
