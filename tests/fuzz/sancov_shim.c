/*
 * Coverage glue between atheris's libFuzzer and GCC's AddressSanitizer.
 *
 * run.sh preloads this library *before* GCC's libasan. Two reasons:
 *
 * 1. libasan exports weak no-op __sanitizer_cov_* callbacks. Preloaded first,
 *    they would shadow the real ones inside atheris's libFuzzer (which atheris
 *    calls through the PLT), and the fuzzer would see no coverage at all, not
 *    even of Python code ("Is the code instrumented for coverage?"). The
 *    functions below come first in the lookup order and forward to libFuzzer's
 *    own copies, found with dlsym on the already loaded atheris core module
 *    (path in $ATHERIS_CORE).
 *
 * 2. GCC can only instrument native code with -fsanitize-coverage=trace-pc
 *    (one call per basic block), which libFuzzer no longer accepts. Here that
 *    call feeds an AFL-style edge map (hash of previous and current block),
 *    registered with libFuzzer as an inline 8-bit counter array, so the
 *    compiled extensions give the fuzzer edge coverage.
 *
 * Every forwarder ends in a tail call, so libFuzzer still sees the
 * instrumented caller's return address (value profiling keys on it).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdint.h>
#include <stdlib.h>

#define MAP_BITS 16
#define MAP_SIZE (1u << MAP_BITS)

static void *core;          /* atheris core module, once atheris.Fuzz() has loaded it */
static uint32_t core_backoff; /* lookups to answer NULL before trying dlopen again */

static void *lookup(const char *name) {
    if (!core) {
        /* Instrumented code runs at import, before the core is loaded:
           don't pay for a dlopen on every callback until then. */
        if (core_backoff) {
            core_backoff--;
            return NULL;
        }
        const char *path = getenv("ATHERIS_CORE");
        core = path ? dlopen(path, RTLD_NOLOAD | RTLD_LAZY) : NULL;
        if (!core) {
            core_backoff = 4096;
            return NULL;
        }
    }
    return dlsym(core, name);
}

#define FORWARD(name, params, args)                                      \
    typedef void (*name##_fn) params;                                    \
    static name##_fn real_##name;                                        \
    void name params {                                                   \
        if (__builtin_expect(!real_##name, 0)) {                         \
            real_##name = (name##_fn)lookup(#name);                      \
            if (!real_##name)                                            \
                return;                                                  \
        }                                                                \
        real_##name args;                                                \
    }

FORWARD(__sanitizer_cov_8bit_counters_init, (uint8_t *b, uint8_t *e), (b, e))
FORWARD(__sanitizer_cov_pcs_init, (const uintptr_t *b, const uintptr_t *e), (b, e))
FORWARD(__sanitizer_cov_trace_cmp1, (uint8_t a, uint8_t b), (a, b))
FORWARD(__sanitizer_cov_trace_cmp2, (uint16_t a, uint16_t b), (a, b))
FORWARD(__sanitizer_cov_trace_cmp4, (uint32_t a, uint32_t b), (a, b))
FORWARD(__sanitizer_cov_trace_cmp8, (uint64_t a, uint64_t b), (a, b))
FORWARD(__sanitizer_cov_trace_const_cmp1, (uint8_t a, uint8_t b), (a, b))
FORWARD(__sanitizer_cov_trace_const_cmp2, (uint16_t a, uint16_t b), (a, b))
FORWARD(__sanitizer_cov_trace_const_cmp4, (uint32_t a, uint32_t b), (a, b))
FORWARD(__sanitizer_cov_trace_const_cmp8, (uint64_t a, uint64_t b), (a, b))
FORWARD(__sanitizer_cov_trace_switch, (uint64_t v, uint64_t *cases), (v, cases))
FORWARD(__sanitizer_cov_trace_div4, (uint32_t v), (v))
FORWARD(__sanitizer_cov_trace_div8, (uint64_t v), (v))
FORWARD(__sanitizer_cov_trace_gep, (uintptr_t v), (v))
FORWARD(__sanitizer_cov_trace_pc_indir, (uintptr_t v), (v))

/* GCC also traces floating-point compares; libFuzzer has no use for them. */
void __sanitizer_cov_trace_cmpf(float a, float b) { (void)a; (void)b; }
void __sanitizer_cov_trace_cmpd(double a, double b) { (void)a; (void)b; }

/* Edge map for GCC's trace-pc. */
static uint8_t edge_map[MAP_SIZE];
static uintptr_t edge_pcs[2 * MAP_SIZE]; /* (fake PC, flags) per counter, as libFuzzer wants */
static int edge_map_registered;
static __thread uint32_t prev_block;

static void register_edge_map(void) {
    void (*counters_init)(uint8_t *, uint8_t *) =
        (void (*)(uint8_t *, uint8_t *))lookup("__sanitizer_cov_8bit_counters_init");
    void (*pcs_init)(const uintptr_t *, const uintptr_t *) =
        (void (*)(const uintptr_t *, const uintptr_t *))lookup("__sanitizer_cov_pcs_init");
    if (!counters_init || !pcs_init)
        return; /* libFuzzer not loaded yet: native code ran before `import atheris` */
    for (uint32_t i = 0; i < MAP_SIZE; i++) {
        edge_pcs[2 * i] = (uintptr_t)&edge_map[i]; /* unique, never executed */
        edge_pcs[2 * i + 1] = 0;
    }
    edge_map_registered = 1;
    counters_init(edge_map, edge_map + MAP_SIZE);
    pcs_init(edge_pcs, edge_pcs + 2 * MAP_SIZE);
}

void __sanitizer_cov_trace_pc(void) {
    uintptr_t pc = (uintptr_t)__builtin_return_address(0);
    uint32_t block = (uint32_t)((pc * 0x9E3779B97F4A7C15ull) >> (64 - MAP_BITS));
    if (__builtin_expect(!edge_map_registered, 0))
        register_edge_map();
    edge_map[(block ^ prev_block) & (MAP_SIZE - 1)]++;
    prev_block = block >> 1;
}
