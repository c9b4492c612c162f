#include "buf.h"

#include <stdlib.h>
#include <string.h>

#include "err.h"

void buf_init(struct buf *b)
{
    b->data = NULL;
    b->head = b->len = b->cap = 0;
    b->frame_max = 0;
}

void buf_free(struct buf *b)
{
    free(b->data);
    b->data = NULL;
    b->head = b->len = b->cap = 0;
}

uint8_t *buf_reserve(struct buf *b, size_t n)
{
    if (b->cap - b->len >= n)
        return b->data + b->len;
    if (b->head > 0) {          /* compact before growing */
        memmove(b->data, b->data + b->head, b->len - b->head);
        b->len -= b->head;
        b->head = 0;
        if (b->cap - b->len >= n)
            return b->data + b->len;
    }
    size_t cap = b->cap ? b->cap : 256;
    while (cap - b->len < n)
        cap *= 2;
    b->data = xrealloc(b->data, cap);
    b->cap = cap;
    return b->data + b->len;
}

void buf_commit(struct buf *b, size_t n)
{
    b->len += n;
}

void buf_append(struct buf *b, const void *p, size_t n)
{
    if (n == 0)
        return;
    memcpy(buf_reserve(b, n), p, n);
    b->len += n;
}

void buf_consume(struct buf *b, size_t n)
{
    b->head += n;
    if (b->head == b->len) {
        b->head = b->len = 0;
    } else if (b->head > b->cap / 2) {
        memmove(b->data, b->data + b->head, b->len - b->head);
        b->len -= b->head;
        b->head = 0;
    }
}

void buf_reset(struct buf *b, size_t keep)
{
    b->head = b->len = 0;
    if (b->cap > keep) {
        free(b->data);
        b->data = NULL;
        b->cap = 0;
    }
}
