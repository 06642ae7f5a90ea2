# sori: plain GNU make. `make` builds build/sori; `make run` and `make test` are
# the two commands of the README. Variants build out of tree:
#   VARIANT=release -> build/        (-O2 -g)
#   VARIANT=asan    -> build/asan/   (AddressSanitizer + UndefinedBehaviorSanitizer)
#   VARIANT=tsan    -> build/tsan/   (ThreadSanitizer)
#   VARIANT=fuzz    -> build/fuzz/   (clang, libFuzzer targets from tests/fuzz/)
# Unit tests (tests/unit/test_<x>.c) #include the .c they test and link the
# rest from libsori.a, so static helpers are reachable.

VARIANT ?= release
PKGS := libuv jansson openssl zlib sqlite3 libsodium libpq hiredis

ifeq ($(VARIANT),release)
  OUT := build
  VFLAGS := -O2 -g
else ifeq ($(VARIANT),asan)
  OUT := build/asan
  VFLAGS := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined
else ifeq ($(VARIANT),tsan)
  OUT := build/tsan
  VFLAGS := -O1 -g -fsanitize=thread
else ifeq ($(VARIANT),fuzz)
  OUT := build/fuzz
  CC := clang
  VFLAGS := -O1 -g -fno-omit-frame-pointer -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined -DSORI_FUZZ
else
  $(error unknown VARIANT $(VARIANT): use release, asan, tsan or fuzz)
endif

CFLAGS := -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -Wshadow -Wno-missing-field-initializers \
          -Isrc $(shell pkg-config --cflags $(PKGS)) $(VFLAGS) $(EXTRA_CFLAGS)
LDLIBS := $(shell pkg-config --libs $(PKGS)) -lpthread -lm

SRCS := $(sort $(shell find src -name '*.c' ! -name main.c))
OBJS := $(SRCS:%.c=$(OUT)/obj/%.o)
LIB := $(OUT)/libsori.a
BIN := $(OUT)/sori
UNIT_BINS := $(patsubst tests/unit/%.c,$(OUT)/tests/%,$(wildcard tests/unit/test_*.c))
FUZZ_BINS := $(patsubst tests/fuzz/%.c,$(OUT)/%,$(wildcard tests/fuzz/fuzz_*.c))

.PHONY: all sori unit asan tsan fuzz-build fuzz-bins fuzz run test deps clean bench soak

all: $(BIN)
sori: $(BIN)

$(OUT)/obj/%.o: %.c
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

$(LIB): $(OBJS)
	@rm -f $@
	ar rcs $@ $^

$(BIN): $(OUT)/obj/src/main.o $(LIB)
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)

$(OUT)/tests/test_%: tests/unit/test_%.c $(LIB)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -MMD -MP -o $@ $< $(LIB) $(LDLIBS) -lcmocka

$(OUT)/fuzz_%: tests/fuzz/fuzz_%.c $(LIB)
	$(CC) $(CFLAGS) -fsanitize=fuzzer -o $@ $< $(LIB) $(LDLIBS)

unit: $(UNIT_BINS)

asan:
	$(MAKE) VARIANT=asan all unit
tsan:
	$(MAKE) VARIANT=tsan all
fuzz-build:
	$(MAKE) VARIANT=fuzz fuzz-bins
fuzz-bins: $(FUZZ_BINS)

# Runs every libFuzzer target (or those in FUZZ_TARGETS) for FUZZ_SECONDS
# (default 60) each; FUZZ_MERGE=1 merges new coverage into tests/fuzz/corpus.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?=
fuzz: fuzz-build
	scripts/fuzz.sh $(FUZZ_SECONDS) $(FUZZ_TARGETS)

deps:
	@scripts/deps.sh

run: deps
	@$(MAKE) --no-print-directory all
	$(BIN) serve --host 127.0.0.1 --port 8080 --data-dir ./data $(ARGS)

test: deps
	@scripts/test.sh

# The long soak and chaos tests (tests/soak/, scripts/soak.sh): churn, flood,
# kill -9 loops, the integration tests under valgrind. Not part of `make test`.
soak: deps
	@$(MAKE) --no-print-directory all
	@scripts/soak.sh

bench: deps
	@$(MAKE) --no-print-directory all
	@bench/compare.sh

clean:
	rm -rf build

-include $(OBJS:.o=.d) $(OUT)/obj/src/main.d $(UNIT_BINS:=.d)
