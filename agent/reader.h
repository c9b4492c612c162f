/* reader.h — readers of command logs: an attached exec stream or a `logs`
 * request. A reader holds a position in the log and is sent output, gaps and
 * finally exit (or end) while its connection has room (below CONN_OUT_HIGH).
 * A *follower* (exec stream, logs with follow) protects the bytes it has not
 * been sent yet: the log never drops them, the command's pipes stop instead.
 */
#ifndef SA_READER_H
#define SA_READER_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/queue.h>

#include "conn.h"

struct cmd;

struct reader {
    struct cmd *cmd;
    struct conn_pending pend;        /* on its connection; holds it */
    uint64_t pos;                    /* next combined position to send */
    bool follow;
    bool is_exec;                    /* the exec request's own stream */
    LIST_ENTRY(reader) link;         /* in cmd->readers */
};

/* The caller checked conn_pending_room(). */
struct reader *rd_open(struct cmd *c, struct conn *conn, uint64_t req_id, uint64_t from,
                       bool follow, bool is_exec);
/* Off its command and its connection, freed. */
void rd_close(struct reader *r);
/* Send what the reader is owed, as far as its connection takes it. */
void rd_pump(struct reader *r);
void rd_pump_cmd(struct cmd *c);
/* Lowest position a follower of c still needs; UINT64_MAX with none. The
 * log store keeps it per log (lstore_protect/lstore_followed): rd_open,
 * rd_pump and rd_close tell it whenever a follower's position changes. */
uint64_t rd_protected_from(const struct cmd *c);
bool rd_has_exec_stream(const struct cmd *c);

#endif
