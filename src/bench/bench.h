/*
 * bench.h: `sori bench`, the load generator, and its internals.
 *
 * bench_main() is the only entry point for the rest of sori. Below it are the
 * pieces the bench files share (everything here is private to src/bench/):
 * the options, the log-linear latency histogram (bench_hist.c), the
 * per-thread event loops that drive the connections (bench_loop.c) and the
 * coordinator that moves every thread through the same phases and prints the
 * report (bench.c).
 *
 * Threads: the coordinator (the main thread) and --threads loop threads. Each
 * loop thread owns its connections, its histograms and its counters outright;
 * counters that the coordinator reads while the run is going (for barriers and
 * the drain) are atomics with exactly one writer, the owning thread, so a bump
 * is a plain load and store. Histograms and the rest are read only after the
 * loop threads have been joined.
 */
#ifndef SORI_BENCH_H
#define SORI_BENCH_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

/* `sori bench [flags]`: runs one scenario against a running server and prints
 * one JSON line on stdout (a human summary on stderr). argv holds the flags
 * only. Returns the exit code: 0 done, 1 the run failed (nothing connected,
 * a system call failed), 2 bad usage. */
int bench_main(int argc, char **argv);

/* ---- everything below is internal to src/bench/ ---- */

enum { BENCH_FANOUT, BENCH_CONNECTIONS, BENCH_DM, BENCH_DURABLE };

#define BENCH_TARGETS_MAX 16 /* distinct server URLs (--url, --pub-url) */
#define BENCH_CPU_MAX 32     /* --cpu entries */

/* One server URL. Connections to the same URL string share a target; a
 * delivery between connections of two targets counts as crossing servers. */
typedef struct {
    char url[800];
    char host[256];
    char port_str[8];
    char path[512];             /* "/ws", with any query the URL had */
    struct sockaddr_storage addr;
    socklen_t addrlen;
    int tls;                    /* wss:// */
} bench_target_t;

/* One --cpu entry: a process to measure over the window, with its
 * children when `children` (PID+). Entries with the same label add up. */
typedef struct {
    char label[24];
    pid_t pid;
    int children;
} bench_cpu_t;

typedef struct {
    int scenario;
    bench_target_t tg[BENCH_TARGETS_MAX]; /* tg[0]: the first --url */
    int ntg;
    int urls[BENCH_TARGETS_MAX], nurls;         /* --url: indexes into tg */
    int pub_urls[BENCH_TARGETS_MAX], npub_urls; /* --pub-url (fanout publishers; default --url) */
    int spread_room;            /* --spread room: a room's connections of one role share a target */
    bench_cpu_t cpu[BENCH_CPU_MAX];
    int ncpu;
    const char *window_hook;    /* --window-hook: run with "start" / "end" at the window's edges */
    int threads;
    int sources;                /* > 1: bind to 127.0.0.2 .. 127.0.0.(sources+1) */
    int rooms, subs, pubs, conns, pairs, window;
    double rate;                /* messages/s per publisher; 0 = closed loop (window) */
    double duration, warmup, drain, connect_timeout;
    double join_delay;          /* seconds between the create and join phases */
    int size;                   /* bytes of message text, >= BENCH_TS_TEXT */
    int connect_concurrency;    /* handshakes in progress at once, all threads */
    pid_t server_pid;
    char tag[16];               /* makes user and room names unique per run */
    int nchan;                  /* --peer-protocol nchan: see bench_loop.c */
} bench_opts_t;

/* ---- histogram: HDR-style log-linear buckets, 3 significant digits ----
 * Values below 2048 are exact; above, each power of two is split in 1024
 * buckets, so a bucket is at most 1/1024 of its value wide. Values are
 * clamped to 2^41 - 1 (about 25 days in µs). 32 768 counters, 256 KiB. */
#define BENCH_HIST_SUB_BITS 10
#define BENCH_HIST_MAX_SHIFT 30
#define BENCH_HIST_BUCKETS ((2u << BENCH_HIST_SUB_BITS) + BENCH_HIST_MAX_SHIFT * (1u << BENCH_HIST_SUB_BITS))

typedef struct {
    uint64_t count, sum, min, max;
    uint64_t counts[BENCH_HIST_BUCKETS];
} bench_hist_t;

/* Empties h. A zeroed bench_hist_t is not empty (min would be 0): call this. */
void bench_hist_init(bench_hist_t *h);
void bench_hist_add(bench_hist_t *h, uint64_t v);
/* Adds every value of src to dst. */
void bench_hist_merge(bench_hist_t *dst, const bench_hist_t *src);
/* The value at percentile pct (0..100]: the highest value equivalent to the
 * bucket holding it (capped at the exact max); 0 when h is empty. */
uint64_t bench_hist_pct(const bench_hist_t *h, double pct);
/* Bucket index of v and the highest value of a bucket (exposed for tests). */
uint32_t bench_hist_index(uint64_t v);
uint64_t bench_hist_highest(uint32_t idx);

/* ---- shared run state ---- */

/* Phases, in order; the coordinator moves all threads from one to the next. */
enum {
    BP_CONNECT,  /* open connections, handshake, wait for `hello` */
    BP_CREATE,   /* the first connection of each room creates it (public) */
    BP_JOIN,     /* every connection joins its room (not in dm) */
    BP_RUN,      /* the scenario runs: warm-up, then the measured window */
    BP_DRAIN,    /* no new sends; wait for replies and deliveries */
    BP_CLOSE,    /* send close frames, wait for the server's */
    BP_DONE,     /* close what is left and exit */
};

/* Counters with one writer (the owning loop thread) that the coordinator
 * reads while the run goes on. */
typedef struct {
    _Atomic uint64_t phase_seen;     /* last phase this thread has entered */
    _Atomic uint64_t opened, failed, closed;
    _Atomic uint64_t creators, created, joins, joined, join_failed;
    _Atomic uint64_t sent, replies, deliveries;
} bench_live_t;

/* Everything else a thread counts; read after the thread is joined. */
typedef struct {
    uint64_t acked, send_errors, rate_limited, other_errors;
    uint64_t duplicates, out_of_order, gaps;
    uint64_t server_closes, io_errors, protocol_errors;
    uint64_t stalls;        /* sends skipped: the connection's output was full */
    uint64_t late_slots;    /* open loop: sends over 1 ms behind the schedule */
    uint64_t skipped_slots; /* open loop: sends dropped, over 100 ms behind */
    uint64_t w_sent, w_acked, w_deliveries, w_rtts;
    uint64_t w_cross;       /* window deliveries from a sender on another target */
    uint64_t w_acked_tg[BENCH_TARGETS_MAX], w_deliveries_tg[BENCH_TARGETS_MAX]; /* by the connection's target */
    uint64_t conns_tg[BENCH_TARGETS_MAX];
    uint64_t setup_errors;
    char first_error[160];
} bench_stats_t;

struct bench_conn;

typedef struct bench_thread {
    int id;
    pthread_t tid;
    _Atomic int os_tid;       /* for /proc/self/task/TID/schedstat */
    int epfd, evfd, tfd;
    struct bench_conn *conns; /* this thread's connections */
    uint32_t nconns;
    uint32_t next_connect;    /* conns[next_connect..] are not started yet */
    uint32_t pending;         /* connecting or handshaking now */
    uint32_t max_pending;
    struct bench_conn **pubs; /* open-loop publishers, paced round-robin */
    uint32_t npubs;
    uint64_t pace_start_ns, pace_slot;
    int phase;
    struct bench_conn *dirty; /* connections with output to flush this turn */
    uint8_t *scratch;         /* read buffer: carried bytes + one read */
    uint64_t rng;
    bench_live_t live;
    bench_stats_t st;
    bench_hist_t lat, ack, rtt;
} bench_thread_t;

/* The run, shared by all threads. The arrays are sized once before the loop
 * threads start. */
typedef struct {
    bench_opts_t o;
    _Atomic int phase;
    _Atomic int measuring;     /* 1 during the measured window */
    uint32_t nconns;           /* connections in total */
    uint32_t nrooms;
    _Atomic uint64_t *room_acked;   /* per room: acked sends */
    _Atomic uint32_t *room_members; /* per room: connections that joined */
    bench_thread_t *threads;
} bench_run_t;

extern bench_run_t bench_g;

/* Sets up a loop thread (epoll, eventfd, timerfd, its connections). 0 or
 * -1 with err filled. */
int bench_thread_setup(bench_thread_t *t, char *err, size_t errlen);
/* The loop thread's body: runs until BP_DONE, then closes everything. */
void *bench_thread_main(void *arg);
/* Frees what bench_thread_setup allocated (after the thread is joined). */
void bench_thread_free(bench_thread_t *t);
/* The target (index into bench_g.o.tg) of the connection with global index
 * gidx: by role (fanout publishers use --pub-url) and --spread. */
int bench_target_of(uint32_t gidx);
/* Wakes a loop thread so it sees a phase change. */
void bench_thread_wake(bench_thread_t *t);

/* Monotonic and wall clocks. */
uint64_t bench_now_ns(void);
uint64_t bench_wall_us(void);

/* Width of the timestamp in message text: "t=" and 19 decimal digits (µs). */
#define BENCH_TS_DIGITS 19
#define BENCH_TS_TEXT (2 + BENCH_TS_DIGITS)

#endif
