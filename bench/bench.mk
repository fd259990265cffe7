# Benchmark tools: load generator/verifier, the libevent "ceiling" server,
# the "floor" (the same echo paying one malloc and copy per frame) and the
# C-only evhttp "hello" server (the HTTP floor).
#
# Included from the top-level Makefile (which defines CC and uses build/ for
# output), or used standalone from the repository root:
#   make -f bench/bench.mk build/bench/loadgen build/bench/ceiling
#   make -f bench/bench.mk bench-selftest

CC ?= cc
BENCH_CFLAGS ?= -std=c11 -O2 -g -D_GNU_SOURCE -Wall -Wextra -Wpedantic \
	-Wshadow -Wmissing-prototypes -Wstrict-prototypes
BENCH_EVENT_CFLAGS := $(shell pkg-config --cflags libevent_core)
BENCH_EVENT_LIBS := $(shell pkg-config --libs libevent_core)
BENCH_EVHTTP_LIBS := $(shell pkg-config --libs libevent_extra) $(BENCH_EVENT_LIBS)
BENCH_BINS := build/bench/loadgen build/bench/ceiling build/bench/floor build/bench/http_floor

BENCH_SSL_LIBS := $(shell pkg-config --libs libssl libcrypto)
BENCH_BINS += build/bench/ceiling_tls

build/bench/loadgen: bench/loadgen.c bench/bench.mk
	@mkdir -p $(@D)
	$(CC) $(BENCH_CFLAGS) -o $@ $< $(BENCH_SSL_LIBS)

# The echo servers share their setup (listen, accept, signals) in bench.c.
build/bench/ceiling_tls: bench/ceiling_tls.c bench/bench.c bench/bench.h bench/bench.mk
	@mkdir -p $(@D)
	$(CC) $(BENCH_CFLAGS) $(BENCH_EVENT_CFLAGS) -o $@ bench/ceiling_tls.c bench/bench.c $(BENCH_EVENT_LIBS) $(BENCH_SSL_LIBS)

build/bench/ceiling build/bench/floor: build/bench/%: bench/%.c bench/bench.c bench/bench.h bench/bench.mk
	@mkdir -p $(@D)
	$(CC) $(BENCH_CFLAGS) $(BENCH_EVENT_CFLAGS) -o $@ $< bench/bench.c $(BENCH_EVENT_LIBS)

build/bench/http_floor: bench/http_floor.c bench/bench.mk
	@mkdir -p $(@D)
	$(CC) $(BENCH_CFLAGS) $(BENCH_EVENT_CFLAGS) -o $@ $< $(BENCH_EVHTTP_LIBS)

# A throw-away certificate for the TLS rows (made here, never committed).
build/bench/tls/cert.pem:
	@mkdir -p $(@D)
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
	  -keyout $(@D)/key.pem -out $@ -subj /CN=localhost \
	  -addext subjectAltName=DNS:localhost,IP:127.0.0.1 2>/dev/null
BENCH_BINS += build/bench/tls/cert.pem

.PHONY: bench-selftest
bench-selftest: $(BENCH_BINS)
	BENCH_NO_BUILD=1 bash bench/selftest.sh
