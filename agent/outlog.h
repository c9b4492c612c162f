/* outlog.h — a command's output log: stream-tagged chunks in the order they
 * were read, addressed by combined position ("pos": bytes of both streams
 * before it). Readers hold positions, never pointers, so chunks can be dropped
 * from the front and the last chunk can grow in place.
 *
 * Accounting: `bytes` counts every chunk's allocated capacity plus
 * OLOG_CHUNK_OVERHEAD, so the caps built on it bound real memory even for
 * output that arrives one byte at a time. A chunk is at least OLOG_MIN_CHUNK
 * bytes of capacity; small reads of the same stream fill it before a new one
 * is started.
 */
#ifndef SA_OUTLOG_H
#define SA_OUTLOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define OLOG_MIN_CHUNK 1024u
#define OLOG_CHUNK_OVERHEAD 64u

struct olog_chunk {
    uint64_t pos;              /* combined position of data[0] */
    uint64_t offset;           /* offset of data[0] within its stream */
    uint32_t len, cap;
    uint8_t stream;            /* 0 stdout, 1 stderr */
    uint8_t data[];
};

struct olog {
    struct olog_chunk **ring;  /* chunks, oldest at ring[head] */
    size_t head, n, size;
    uint64_t start;            /* first position still held */
    uint64_t end;              /* next position to be written */
    uint64_t next_offset[2];   /* next per-stream offset */
    uint64_t bytes;            /* accounted memory (see above) */
};

void olog_init(struct olog *l);
void olog_free(struct olog *l);
/* Append; returns the accounting growth in bytes. */
size_t olog_append(struct olog *l, int stream, const void *p, size_t n);
/* Drop the oldest chunk if it ends at or before limit; returns the bytes of
 * accounting freed (0: nothing dropped). */
size_t olog_drop_front(struct olog *l, uint64_t limit);
/* Drop everything; returns the accounting freed. start becomes end. */
size_t olog_clear(struct olog *l);
/* The chunk holding position pos (start <= pos < end), or NULL. */
const struct olog_chunk *olog_find(const struct olog *l, uint64_t pos);

#endif
