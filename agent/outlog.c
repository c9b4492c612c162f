#include "outlog.h"

#include <stdlib.h>
#include <string.h>

#include "err.h"

void olog_init(struct olog *l)
{
    memset(l, 0, sizeof *l);
}

static struct olog_chunk *olog_at(const struct olog *l, size_t i)
{
    return l->ring[(l->head + i) % l->size];
}

static size_t chunk_cost(const struct olog_chunk *c)
{
    return (size_t)c->cap + OLOG_CHUNK_OVERHEAD;
}

void olog_free(struct olog *l)
{
    olog_clear(l);
    free(l->ring);
    l->ring = NULL;
    l->size = 0;
}

static void olog_push(struct olog *l, struct olog_chunk *c)
{
    if (l->n == l->size) {
        size_t size = l->size ? l->size * 2 : 16;
        struct olog_chunk **ring = xmalloc(size * sizeof *ring);
        for (size_t i = 0; i < l->n; i++)
            ring[i] = olog_at(l, i);
        free(l->ring);
        l->ring = ring;
        l->size = size;
        l->head = 0;
    }
    l->ring[(l->head + l->n) % l->size] = c;
    l->n++;
}

size_t olog_append(struct olog *l, int stream, const void *p, size_t n)
{
    if (n == 0)
        return 0;
    size_t grown = 0;
    if (l->n > 0) {     /* fill the last chunk when it is the same stream */
        struct olog_chunk *last = olog_at(l, l->n - 1);
        size_t room = last->cap - last->len;
        if (last->stream == stream && room > 0) {
            size_t k = n < room ? n : room;
            memcpy(last->data + last->len, p, k);
            last->len += (uint32_t)k;
            l->end += k;
            l->next_offset[stream] += k;
            p = (const uint8_t *)p + k;
            n -= k;
        }
    }
    if (n > 0) {
        size_t cap = n < OLOG_MIN_CHUNK ? OLOG_MIN_CHUNK : n;
        struct olog_chunk *c = xmalloc(sizeof *c + cap);
        c->pos = l->end;
        c->offset = l->next_offset[stream];
        c->len = (uint32_t)n;
        c->cap = (uint32_t)cap;
        c->stream = (uint8_t)stream;
        memcpy(c->data, p, n);
        olog_push(l, c);
        l->end += n;
        l->next_offset[stream] += n;
        grown = chunk_cost(c);
        l->bytes += grown;
    }
    return grown;
}

size_t olog_drop_front(struct olog *l, uint64_t limit)
{
    if (l->n == 0)
        return 0;
    struct olog_chunk *c = olog_at(l, 0);
    if (c->pos + c->len > limit)
        return 0;
    size_t freed = chunk_cost(c);
    l->head = (l->head + 1) % l->size;
    l->n--;
    l->start = l->n ? olog_at(l, 0)->pos : l->end;
    l->bytes -= freed;
    free(c);
    return freed;
}

size_t olog_clear(struct olog *l)
{
    size_t freed = 0;
    while (l->n > 0)
        freed += olog_drop_front(l, UINT64_MAX);
    l->start = l->end;
    return freed;
}

const struct olog_chunk *olog_find(const struct olog *l, uint64_t pos)
{
    if (pos < l->start || pos >= l->end)
        return NULL;
    size_t lo = 0, hi = l->n;     /* first chunk whose end is beyond pos */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const struct olog_chunk *c = olog_at(l, mid);
        if (c->pos + c->len <= pos)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < l->n ? olog_at(l, lo) : NULL;
}
