#include "ackwin.h"

#include <stdlib.h>
#include <string.h>

void ackwin_init(struct ackwin *w, uint64_t window)
{
    memset(w, 0, sizeof *w);
    w->window = window;
}

uint64_t ackwin_pending(const struct ackwin *w)
{
    return w->taken - w->through;
}

/* Bytes first: a sender that keeps to its room never meets either. */
enum ackwin_fit ackwin_admit(const struct ackwin *w, size_t n)
{
    if (ackwin_pending(w) + n > w->window)
        return ACKWIN_OVER_BYTES;
    if (w->nmarks >= ACKWIN_MARKS_MAX)
        return ACKWIN_OVER_MARKS;
    return ACKWIN_FITS;
}

uint64_t ackwin_take(struct ackwin *w, uint64_t n)
{
    w->taken += n;
    w->nmarks++;
    return w->taken;
}

void ackwin_wrote(struct ackwin *w, uint64_t n)
{
    w->through += n;
}

bool ackwin_reached(const struct ackwin *w, uint64_t mark)
{
    return mark <= w->through;
}

void ackwin_answered(struct ackwin *w)
{
    w->nmarks--;
}

void ackwin_sender_init(struct ackwin_sender *s, uint64_t window)
{
    ackwin_init(&s->win, window);
    s->head = 0;
}

uint64_t ackwin_room(const struct ackwin_sender *s)
{
    uint64_t pending = ackwin_pending(&s->win);
    if (s->win.nmarks >= ACKWIN_MARKS_MAX || pending >= s->win.window)
        return 0;
    return s->win.window - pending;
}

void ackwin_sent(struct ackwin_sender *s, uint64_t id, uint64_t n)
{
    /* the ring is full only if the caller ignored ackwin_room: a bug */
    if (s->win.nmarks >= ACKWIN_MARKS_MAX)
        abort();
    unsigned i = (s->head + s->win.nmarks) % ACKWIN_MARKS_MAX;
    s->marks[i].id = id;
    s->marks[i].n = n;
    s->win.taken += n;
    s->win.nmarks++;
}

bool ackwin_acked(struct ackwin_sender *s, uint64_t id)
{
    unsigned k = 0;
    while (k < s->win.nmarks && s->marks[(s->head + k) % ACKWIN_MARKS_MAX].id != id)
        k++;
    if (k == s->win.nmarks)
        return false;
    s->win.through += s->marks[(s->head + k) % ACKWIN_MARKS_MAX].n;
    /* close the gap: the marks before it move up one (none for the oldest) */
    for (; k > 0; k--)
        s->marks[(s->head + k) % ACKWIN_MARKS_MAX] =
            s->marks[(s->head + k - 1) % ACKWIN_MARKS_MAX];
    s->head = (s->head + 1) % ACKWIN_MARKS_MAX;
    s->win.nmarks--;
    return true;
}
