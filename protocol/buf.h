/* buf.h — a growable byte buffer with a consumed head.
 *
 * Valid bytes are data[head .. len). Appending grows the allocation
 * geometrically; consuming moves head, and the buffer compacts itself when the
 * head passes half of the capacity, so a FIFO used as a write queue costs one
 * memmove per half-buffer drained, not one per write. Bounds are the caller's
 * business: every user documents its own high-water mark.
 */
#ifndef SA_BUF_H
#define SA_BUF_H

#include <stddef.h>
#include <stdint.h>

struct buf {
    uint8_t *data;
    size_t head;
    size_t len;
    size_t cap;
    size_t frame_max;   /* wire_end: frames closed here are at most this long
                           (0: unchecked); asserted in debug builds. Kept by
                           buf_free and buf_reset. */
};

void buf_init(struct buf *b);
void buf_free(struct buf *b);
/* Room for n more bytes at the tail; returns where to write them. */
uint8_t *buf_reserve(struct buf *b, size_t n);
/* Declare n bytes written at the tail (after buf_reserve). */
void buf_commit(struct buf *b, size_t n);
void buf_append(struct buf *b, const void *p, size_t n);
/* Drop n bytes from the head. */
void buf_consume(struct buf *b, size_t n);
/* Drop everything; keep the allocation unless it is larger than keep. */
void buf_reset(struct buf *b, size_t keep);

static inline size_t buf_size(const struct buf *b) { return b->len - b->head; }
static inline uint8_t *buf_ptr(const struct buf *b) { return b->data ? b->data + b->head : NULL; }

#endif
