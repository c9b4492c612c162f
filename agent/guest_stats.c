/* guest_stats.c — the `stats` reply: the system figures (stats.c reads
 * them) and the running commands (docs/agent.md "Stats"). */
#include "guest.h"


#include "agent.h"
#include "cmd.h"
#include "conn.h"
#include "stats.h"

/* Upper bound of one encoded entry of `commands` (5 keys, u64 values), in
 * bytes and in msgpack objects (the map, 5 keys, 5 values): the reply must
 * stay within WIRE_MAX_OBJECTS (PROTOCOL.md §1), whose other fields take
 * fewer than GUEST_STATS_OBJECTS_OTHER. */
#define GUEST_STATS_ENTRY_MAX 96
#define GUEST_STATS_ENTRY_OBJECTS 11
#define GUEST_STATS_OBJECTS_OTHER 64

static void guest_stats_cmd(struct wire_enc *w, const struct cmd *c)
{
    /* once the leader is reaped its pid may belong to someone else */
    pid_t pid = c->reaped ? 0 : c->pid;
    unsigned entry = wire_map_begin(w);
    wire_kv_uint(w, "cmd", c->id);
    wire_kv_uint(w, "pid", (uint64_t)c->pid);
    wire_kv_str(w, "state", "running");
    wire_kv_uint(w, "cpu_ms", cmd_cpu_ms(c, pid));
    wire_kv_uint(w, "rss", stats_rss(pid));
    wire_map_end(w, entry);
}

static void guest_stats_cmds(struct wire_enc *w, struct agent *a)
{
    uint32_t room = (a->cfg.max_frame - 1024) / GUEST_STATS_ENTRY_MAX, n = 0;
    uint32_t objects = (WIRE_MAX_OBJECTS - GUEST_STATS_OBJECTS_OTHER) / GUEST_STATS_ENTRY_OBJECTS;
    if (objects < room)
        room = objects;
    for (struct cmd *c = a->cmds; c && n < room; c = c->next)
        n += !c->done;
    wire_key(w, "commands");
    msgpack_pack_array(&w->pk, n);
    for (struct cmd *c = a->cmds; c && n > 0; c = c->next)
        if (!c->done) {
            guest_stats_cmd(w, c);
            n--;
        }
}

int guest_stats(struct conn *c, const struct wire_req *r, struct sa_err *e)
{
    (void)e;
    struct agent *a = c->a;
    struct stats_sys s;
    stats_system(a->workdir, &s);
    struct wire_enc w;
    wire_begin(&w, conn_out(c));
    wire_kv_str(&w, "type", "ok");
    wire_kv_uint(&w, "id", r->id);
    wire_kv_uint(&w, "uptime_ms", s.uptime_ms);
    wire_key(&w, "load");
    msgpack_pack_array(&w.pk, 3);
    for (int i = 0; i < 3; i++)
        msgpack_pack_double(&w.pk, s.load[i]);
    wire_kv_uint(&w, "mem_total", s.mem_total);
    wire_kv_uint(&w, "mem_available", s.mem_available);
    wire_kv_uint(&w, "disk_total", s.disk_total);
    wire_kv_uint(&w, "disk_free", s.disk_free);
    wire_kv_uint(&w, "agent_rss", s.agent_rss);
    wire_kv_uint(&w, "agent_fds", s.agent_fds);
    wire_kv_uint(&w, "commands_running", a->ncmds_running);
    wire_kv_uint(&w, "commands_exited", a->ncmds_exited);
    wire_kv_uint(&w, "connections", a->conns.n);
    wire_kv_uint(&w, "log_bytes", a->logs.bytes);
    wire_kv_uint(&w, "generation", a->generation);
    tunnel_stats(&w, a);
    guest_stats_cmds(&w, a);
    wire_end(&w);
    return 0;
}
