#include "logstore.h"

#include <malloc.h>

void lstore_init(struct lstore *s, uint64_t cap, uint64_t total_cap, size_t read_max,
                 const struct lstore_ops *ops)
{
    *s = (struct lstore){.cap = cap, .total_cap = total_cap, .ops = ops};
    TAILQ_INIT(&s->running);
    TAILQ_INIT(&s->exited);
    s->read_size = read_max;
    if (cap / 4 < s->read_size)
        s->read_size = (size_t)(cap / 4);
}

size_t lstore_read_size(const struct lstore *s)
{
    return s->read_size;
}

void lstore_add(struct lstore *s, struct lstore_log *l)
{
    olog_init(&l->o);
    l->protect = UINT64_MAX;
    l->paused = false;
    l->exited = false;
    TAILQ_INSERT_TAIL(&s->running, l, link);
}

void lstore_exited(struct lstore *s, struct lstore_log *l)
{
    TAILQ_REMOVE(&s->running, l, link);
    TAILQ_INSERT_TAIL(&s->exited, l, link);
    l->exited = true;
}

/* Log bytes went back to malloc; see LSTORE_TRIM_MIN. */
static void lstore_freed(struct lstore *s, size_t n)
{
    s->bytes -= n;
    s->trim_owed += n;
    if (s->trim_owed >= LSTORE_TRIM_MIN && s->ops && s->ops->trim_due)
        s->ops->trim_due(s);
}

void lstore_remove(struct lstore *s, struct lstore_log *l)
{
    TAILQ_REMOVE(l->exited ? &s->exited : &s->running, l, link);
    lstore_freed(s, olog_clear(&l->o));
    olog_free(&l->o);
}

void lstore_trim(struct lstore *s)
{
    s->trim_owed = 0;
#ifdef __GLIBC__
    malloc_trim(0);
#endif
}

/* --- the eviction rule ------------------------------------------------------ */

/* The oldest chunk of l may go: no follower still needs it. */
static bool lstore_front_droppable(const struct lstore_log *l)
{
    const struct olog_chunk *k = olog_find(&l->o, l->o.start);
    return k && k->pos + k->len <= l->protect;
}

/* Drop one chunk somewhere to make global room: exited logs first, oldest
 * exit first, then running ones, oldest first; never bytes a follower still
 * needs. Returns false when nothing can go. */
static bool lstore_evict_global(struct lstore *s)
{
    struct lstore_log *best = NULL, *l;
    TAILQ_FOREACH(l, &s->exited, link)
        if (lstore_front_droppable(l)) {
            best = l;
            break;
        }
    if (!best)
        TAILQ_FOREACH(l, &s->running, link)
            if (lstore_front_droppable(l)) {
                best = l;
                break;
            }
    if (!best)
        return false;
    /* an exited command's log goes whole (but what a follower is owed) */
    size_t freed;
    do
        lstore_freed(s, (freed = olog_drop_front(&best->o, best->protect)));
    while (freed && best->exited);
    return true;
}

/* Bytes of l a follower has not been sent yet. */
static uint64_t lstore_owed(const struct lstore_log *l)
{
    return l->protect < l->o.end ? l->o.end - l->protect : 0;
}

/* Whether l may read one more chunk under the followers' share: bytes owed
 * to followers, all logs together, stay within that share of the global
 * cap, so that the rest can always be had by logs nobody follows (their
 * oldest bytes drop). A log whose followers have everything may always
 * read: its bytes go straight out. */
static bool lstore_share_room(struct lstore *s, const struct lstore_log *l)
{
    if (lstore_owed(l) == 0)
        return true;
    uint64_t share = s->total_cap / LSTORE_FOLLOWED_SHARE_DEN * LSTORE_FOLLOWED_SHARE_NUM;
    uint64_t owed = s->read_size;
    const struct lstore_log *d;
    TAILQ_FOREACH(d, &s->running, link)
        if ((owed += lstore_owed(d)) > share)
            break;
    if (owed <= share)
        TAILQ_FOREACH(d, &s->exited, link)
            if ((owed += lstore_owed(d)) > share)
                break;
    if (owed <= share)
        return true;
    s->share_wait = true;           /* lstore_followed() wakes it */
    return false;
}

/* Make room for `need` more bytes of l within both caps, dropping what no
 * follower needs. */
static bool lstore_room(struct lstore *s, struct lstore_log *l, size_t need)
{
    if (need && !lstore_share_room(s, l))
        return false;
    while (l->o.bytes + need > s->cap) {
        size_t freed = olog_drop_front(&l->o, l->protect);
        if (!freed)
            return false;
        lstore_freed(s, freed);
    }
    while (s->bytes + need > s->total_cap)
        if (!lstore_evict_global(s))
            return false;
    return true;
}

/* --- writers ------------------------------------------------------------------ */

bool lstore_reserve(struct lstore *s, struct lstore_log *l)
{
    if (lstore_room(s, l, LSTORE_ROOM_BEFORE_READ))
        return true;
    l->paused = true;
    return false;
}

void lstore_append(struct lstore *s, struct lstore_log *l, int stream, const void *p, size_t n)
{
    s->bytes += olog_append(&l->o, stream, p, n);
    lstore_room(s, l, 0);
}

static void lstore_maybe_resume(struct lstore *s, struct lstore_log *l)
{
    if (l->paused && lstore_room(s, l, LSTORE_ROOM_BEFORE_READ)) {
        l->paused = false;
        if (s->ops && s->ops->resume)
            s->ops->resume(l);
    }
}

/* Room for the followers' share was freed: every stopped writer with room
 * goes on. */
static void lstore_resume_all(struct lstore *s)
{
    s->share_wait = false;
    struct lstore_log *l;
    TAILQ_FOREACH_REVERSE(l, &s->running, lstore_list, link)   /* newest first */
        lstore_maybe_resume(s, l);
    TAILQ_FOREACH_REVERSE(l, &s->exited, lstore_list, link)
        lstore_maybe_resume(s, l);
}

/* --- followers ------------------------------------------------------------------ */

void lstore_protect(struct lstore_log *l, uint64_t from)
{
    l->protect = from;
}

void lstore_followed(struct lstore *s, struct lstore_log *l, uint64_t from)
{
    l->protect = from;
    lstore_maybe_resume(s, l);      /* it may have been what held the writer */
    if (s->share_wait)
        lstore_resume_all(s);
}
