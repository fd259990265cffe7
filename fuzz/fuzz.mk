# make fuzz: libFuzzer harnesses with ASan + UBSan, each run for
# FUZZ_SECONDS (default 60) from the seed corpus under fuzz/corpus/NAME;
# what they find lands in build-fuzz/NAME/ (crash-* files).
FUZZ_SECONDS ?= 60
FUZZ_CC      ?= clang
FUZZERS      := frames node handshake
FUZZ_OUT     := build-fuzz
FUZZ_FLAGS   := -std=c11 -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined \
                -fno-sanitize-recover=undefined -MMD -MP
# The TLS module is linked in and preloaded (harness.c), not loaded.
FUZZ_OBJS    := $(BIND:%.c=$(FUZZ_OUT)/obj/%.o) $(TLS:%.c=$(FUZZ_OUT)/obj/%.o)

$(FUZZ_OUT)/obj/%.o: %.c
	@mkdir -p $(@D)
	$(FUZZ_CC) $(CPPFLAGS) $(FUZZ_FLAGS) -fsanitize=fuzzer-no-link -c $< -o $@

# A static pattern: a plain fuzz-% rule would also match the harnesses' own
# dependency files (fuzz-NAME.d), which make then tries to "remake" as
# harnesses for a driver named NAME.d.
$(FUZZERS:%=$(FUZZ_OUT)/fuzz-%): $(FUZZ_OUT)/fuzz-%: fuzz/harness.c $(FUZZ_OBJS)
	@mkdir -p $(@D)
	$(FUZZ_CC) $(CPPFLAGS) $(FUZZ_FLAGS) -fsanitize=fuzzer -DDRIVER='"$*"' -DFUZZ_ROOT='"$(CURDIR)"' \
	  -o $@ $< $(FUZZ_OBJS) $(LUALIBS) $(LIBEVENT) $(TLSLIBS) -lm

fuzz-build: $(FUZZERS:%=$(FUZZ_OUT)/fuzz-%)

# Each harness from its seeds (read-only) plus a working corpus of its own.
fuzz: deps fuzz-build
	@for f in $(FUZZERS); do \
	  mkdir -p $(FUZZ_OUT)/$$f/corpus; \
	  echo "fuzz $$f: $(FUZZ_SECONDS) s"; \
	  ( cd $(FUZZ_OUT)/$$f && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
	    ../fuzz-$$f -max_total_time=$(FUZZ_SECONDS) -timeout=20 -rss_limit_mb=4096 -max_len=65536 \
	      $$( [ -f $(CURDIR)/fuzz/$$f.dict ] && echo -dict=$(CURDIR)/fuzz/$$f.dict ) \
	      -print_final_stats=1 corpus $(CURDIR)/fuzz/corpus/$$f ) || exit 1; \
	done

.PHONY: fuzz fuzz-build
