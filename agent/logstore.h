/* logstore.h — the memory policy of all command logs, in one place: the
 * per-command cap (--log-cap), the global cap (--log-total-cap), the
 * position each log's followers protect, the followers' share of the global
 * cap, which bytes go when room is needed, when a log's writer must stop
 * and when it may go on, and the accounting that decides when freed log
 * memory is handed back to the kernel (PROTOCOL.md "The log, its caps";
 * docs/agent.md "Output").
 *
 * The store knows logs (outlog.h) and positions, nothing of commands,
 * pipes, connections or the event loop. Its owner (cmd.c) writes into a log
 * only after lstore_reserve() said yes, and stops reading that command's
 * pipes when it said no; the readers (reader.c) tell it the lowest position
 * a follower of a log still needs. The store calls back only through
 * struct lstore_ops: "this log's writer may read again" and "freed memory
 * is worth a malloc_trim() soon".
 *
 * Eviction rule: a log over --log-cap loses its own oldest chunks; while all
 * logs together are over --log-total-cap, chunks go from exited commands'
 * logs (oldest exit first; such a log goes whole), then from running ones
 * (oldest command first). Bytes at or after a log's protected position are
 * never dropped: the writer stops instead.
 */
#ifndef SA_LOGSTORE_H
#define SA_LOGSTORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/queue.h>

#include "outlog.h"

/* Bytes owed to followers (log bytes a follower has not been sent yet), all
 * logs together, may fill at most this share of the global cap; the rest is
 * reachable by logs nobody follows. */
#define LSTORE_FOLLOWED_SHARE_NUM 3
#define LSTORE_FOLLOWED_SHARE_DEN 4
/* malloc keeps what the logs free (glibc hands back only the top of the
 * heap, and a big log's chunks sit below newer allocations): once this much
 * has been freed since the last lstore_trim(), every further free tells the
 * owner (lstore_ops.trim_due), which decides when to trim (cmd.c: a timer),
 * so that a stream cycling through its log cap does not pay on every chunk. */
#define LSTORE_TRIM_MIN (1u << 20)
/* Room a log needs before a read: one small chunk. Reading stops only when
 * not even that fits; after the read the log is trimmed back under the caps,
 * so a log exceeds its cap by at most one read while a follower holds it. */
#define LSTORE_ROOM_BEFORE_READ (OLOG_MIN_CHUNK + OLOG_CHUNK_OVERHEAD)

struct lstore;

struct lstore_log {
    struct olog o;             /* the chunks and positions */
    uint64_t protect;          /* lowest position a follower needs; UINT64_MAX: none */
    bool paused;               /* its writer was told to stop (lstore_reserve) */
    bool exited;               /* in the store's exited list */
    TAILQ_ENTRY(lstore_log) link;   /* in running (start order) or exited (exit order) */
};

TAILQ_HEAD(lstore_list, lstore_log);

struct lstore_ops {
    /* l's writer, stopped by lstore_reserve(), may read again (l->paused is
     * already false). Called from lstore_followed(), for l or for any log
     * stopped for the followers' share. */
    void (*resume)(struct lstore_log *l);
    /* Log memory was freed, and at least LSTORE_TRIM_MIN bytes since the
     * last lstore_trim(): call it, soon or once the freeing stops. */
    void (*trim_due)(struct lstore *s);
};

struct lstore {
    uint64_t cap, total_cap;   /* per log, all logs (outlog.h accounting) */
    size_t read_size;          /* one read into a log (lstore_read_size) */
    uint64_t bytes;            /* all logs */
    uint64_t trim_owed;        /* freed since the last lstore_trim() */
    bool share_wait;           /* a writer stopped for the followers' share */
    struct lstore_list running, exited;
    const struct lstore_ops *ops;
};

/* read_max: the largest read the writer can take (its buffer, a frame). */
void lstore_init(struct lstore *s, uint64_t cap, uint64_t total_cap, size_t read_max,
                 const struct lstore_ops *ops);
/* One read's size: read_max, and at most a quarter of the per-log cap so
 * that a small log keeps most of its cap in whole chunks. */
size_t lstore_read_size(const struct lstore *s);

/* A new (running) log; the newest in eviction order. */
void lstore_add(struct lstore *s, struct lstore_log *l);
/* Its command exited: the log is now evicted before running ones, and whole. */
void lstore_exited(struct lstore *s, struct lstore_log *l);
/* Forget a log and free its chunks (nobody may still read it). */
void lstore_remove(struct lstore *s, struct lstore_log *l);

/* Make room for one more read into l. False: no room without dropping
 * bytes a follower needs, or past the followers' share — l is marked paused
 * and its writer must stop until ops->resume. */
bool lstore_reserve(struct lstore *s, struct lstore_log *l);
/* Append what was read, then trim back under the caps. */
void lstore_append(struct lstore *s, struct lstore_log *l, int stream, const void *p, size_t n);

/* A follower of l appeared: protect from `from` (the lowest position any
 * follower of l needs) on. Never resumes anything. */
void lstore_protect(struct lstore_log *l, uint64_t from);
/* l's followers moved on, or one went: protect from `from` now (UINT64_MAX:
 * no follower left), and let l's writer, and those stopped for the
 * followers' share, go on if they have room. */
void lstore_followed(struct lstore *s, struct lstore_log *l, uint64_t from);

/* Hand freed memory back to the kernel (malloc_trim) and reset the count. */
void lstore_trim(struct lstore *s);

#endif
