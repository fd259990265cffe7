# luacomm — build, test, install. Non-recursive; dependencies via pkg-config.
PREFIX   ?= /usr/local
CC       ?= cc
CFLAGS   ?= -O2 -g
PKGS     := lua5.4 libevent_core
WARN     := -Wall -Wextra -Wpedantic -Wshadow -Wundef -Wwrite-strings \
            -Wmissing-prototypes -Wstrict-prototypes -Wold-style-definition
CPPFLAGS += -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE -Ibindings -Iruntime \
            $(shell pkg-config --cflags $(PKGS))
ALL_CFLAGS = -std=c11 $(WARN) $(CFLAGS) -MMD -MP
LIBEVENT := $(shell pkg-config --libs libevent_core)
LUALIBS  := $(shell pkg-config --libs lua5.4)

LUA_SHARE = $(PREFIX)/share/lua/5.4
LUA_LIB   = $(PREFIX)/lib/lua/5.4

BIND := bindings/core.c bindings/sched.c bindings/timer.c bindings/cond.c \
        bindings/addr.c bindings/conn.c bindings/listener.c bindings/udp.c
HOST := $(wildcard runtime/*.c)

# B selects a build flavour: "" (release) or "asan" (ASan + UBSan).
B    ?=
OUT  := build$(if $(B),-$(B))
ifeq ($(B),asan)
CFLAGS := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined
LDFLAGS += -fsanitize=address,undefined
endif

all: $(OUT)/lib/luacomm/core.so $(OUT)/luacomm

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

$(OUT)/luacomm: $(HOST:%.c=$(OUT)/obj/%.o) $(BIND:%.c=$(OUT)/obj/%.o)
	@mkdir -p $(@D)
	$(CC) $(LDFLAGS) -o $@ $^ $(LUALIBS) $(LIBEVENT) -lm

deps:
	@sh tools/install-deps.sh

-include $(shell find build build-asan -name '*.d' 2>/dev/null)
.PHONY: all deps
