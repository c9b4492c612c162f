/* main.c — sandbox-gateway: options, start-up, signals. */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "addr.h"
#include "gw.h"

#define FD_RESERVE 64       /* listener, state dir, provisioner pipes, logs */

static const char USAGE[] =
    "NAME\n"
    "    sandbox-gateway - the Vercel Sandbox HTTP API, served from sandbox agents\n"
    "\n"
    "SYNOPSIS\n"
    "    sandbox-gateway --token-file FILE --state-dir DIR\n"
    "                    (--provisioner PROGRAM | --pool ADDR [--pool ADDR]...)\n"
    "                    [--listen HOST:PORT] [OPTIONS]\n"
    "\n"
    "DESCRIPTION\n"
    "    Serves the HTTP API the @vercel/sandbox SDK speaks (sandboxes, sessions,\n"
    "    commands, logs, files) and runs each session on its own sandbox-agent\n"
    "    through libsa_client. Plain HTTP: put TLS in a reverse proxy. See\n"
    "    docs/gateway.md.\n"
    "\n"
    "OPTIONS\n"
    "    --listen HOST:PORT     where to listen (default 127.0.0.1:8080; HOST may\n"
    "                           be a name, an IPv4 or an IPv6 literal in brackets;\n"
    "                           port 0 picks one, printed on stderr)\n"
    "    --token-file FILE      every request needs 'Authorization: Bearer TOKEN'\n"
    "                           with FILE's content (one trailing newline dropped,\n"
    "                           1..4096 bytes), compared in constant time\n"
    "    --state-dir DIR        sandboxes and sessions (agent addresses, tokens,\n"
    "                           timeouts), in DIR/state.json (0600, rewritten\n"
    "                           atomically): a restarted gateway keeps serving\n"
    "    --provisioner PROGRAM  'PROGRAM create SESSION_ID' (create request JSON on\n"
    "                           stdin) prints the agent's address, and optionally\n"
    "                           'token TOKEN' on a second line; 'PROGRAM stop\n"
    "                           SESSION_ID' tears the session down\n"
    "    --pool ADDR            a running agent (unix:, tcp:, fc:, vsock:) a session\n"
    "                           may use; repeatable; one session per agent at a time\n"
    "    --pool-token-file FILE the shared token of the --pool agents\n"
    "    --provisioner-timeout S  bound on each provisioner run and on the agent's\n"
    "                           first answer after create (default 60)\n"
    "    --connect-timeout S    bound on connecting to an agent (default 10)\n"
    "    --max-connections N    concurrent HTTP connections, each with its own\n"
    "                           thread (default 1024; lowered to fit the\n"
    "                           descriptor limit, raised to its hard value)\n"
    "    --max-body BYTES       JSON request bodies (default 1048576; fs/write\n"
    "                           bodies are streamed, never bounded or buffered)\n"
    "    --idle-timeout S       close HTTP connections idle this long (default 600)\n"
    "    --max-route-connections N  connections to the sandboxes' routes relayed at\n"
    "                           once, each with its own agent connection and two\n"
    "                           64 KiB buffers (default 256; more wait)\n"
    "    -v, --verbose          log every request\n"
    "    -h, --help             this text\n"
    "\n"
    "SIGNALS\n"
    "    SIGTERM, SIGINT: stop serving; running sessions keep running and are\n"
    "    served again by the next gateway on the same --state-dir.\n";

void gw_log(const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    fprintf(stderr, "sandbox-gateway: %s\n", line);
}

static int parse_listen(struct gw *gw, const char *s)
{
    const char *colon = strrchr(s, ':');
    if (!colon || colon == s)
        return -1;
    size_t hn = (size_t)(colon - s);
    const char *h = s;
    if (h[0] == '[' && hn >= 2 && h[hn - 1] == ']') {
        h++;
        hn -= 2;
    }
    if (hn == 0 || hn >= sizeof gw->listen_host)
        return -1;
    memcpy(gw->listen_host, h, hn);
    gw->listen_host[hn] = '\0';
    char *end;
    long p = strtol(colon + 1, &end, 10);
    if (*end || end == colon + 1 || p < 0 || p > 65535)
        return -1;
    gw->listen_port = (uint16_t)p;
    return 0;
}

static int parse_secs(const char *s, int *ms)
{
    uint64_t v;
    if (client_parse_secs(s, &v) < 0 || v > 86400000)
        return -1;
    *ms = (int)v;
    return 0;
}

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int usage_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "sandbox-gateway: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\nTry 'sandbox-gateway --help'.\n");
    va_end(ap);
    return 2;
}

enum { O_TOKEN = 256, O_STATE, O_PROV, O_POOL, O_POOLTOK, O_PROVTO, O_CONNTO, O_MAXCONN,
       O_MAXBODY, O_IDLE, O_ROUTECONN };

static const struct option OPTS[] = {
    { "listen", required_argument, NULL, 'l' },
    { "token-file", required_argument, NULL, O_TOKEN },
    { "state-dir", required_argument, NULL, O_STATE },
    { "provisioner", required_argument, NULL, O_PROV },
    { "pool", required_argument, NULL, O_POOL },
    { "pool-token-file", required_argument, NULL, O_POOLTOK },
    { "provisioner-timeout", required_argument, NULL, O_PROVTO },
    { "connect-timeout", required_argument, NULL, O_CONNTO },
    { "max-connections", required_argument, NULL, O_MAXCONN },
    { "max-body", required_argument, NULL, O_MAXBODY },
    { "idle-timeout", required_argument, NULL, O_IDLE },
    { "max-route-connections", required_argument, NULL, O_ROUTECONN },
    { "verbose", no_argument, NULL, 'v' },
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 },
};

static int parse_args(struct gw *gw, int argc, char **argv)
{
    const char *token_file = NULL, *pool_token_file = NULL;
    struct sa_err e;
    struct addr a;
    int o, ms;
    char *end;
    while ((o = getopt_long(argc, argv, "vh", OPTS, NULL)) != -1) {
        switch (o) {
        case 'l':
            if (parse_listen(gw, optarg) < 0)
                return usage_error("--listen '%s': expected HOST:PORT", optarg);
            break;
        case O_TOKEN: token_file = optarg; break;
        case O_STATE: gw->state_dir = optarg; break;
        case O_PROV: gw->provisioner = optarg; break;
        case O_POOL:
            if (addr_parse(optarg, &a, &e) < 0 || strlen(optarg) >= GW_ADDR_MAX)
                return usage_error("--pool '%s': not an agent address", optarg);
            gw->pool = xrealloc(gw->pool, (gw->npool + 1) * sizeof *gw->pool);
            gw->pool[gw->npool++] = optarg;
            break;
        case O_POOLTOK: pool_token_file = optarg; break;
        case O_PROVTO:
            if (parse_secs(optarg, &gw->prov_timeout_ms) < 0)
                return usage_error("--provisioner-timeout '%s': seconds", optarg);
            break;
        case O_CONNTO:
            if (parse_secs(optarg, &gw->connect_timeout_ms) < 0)
                return usage_error("--connect-timeout '%s': seconds", optarg);
            break;
        case O_MAXCONN:
            gw->max_conns = (unsigned)strtoul(optarg, &end, 10);
            if (*end || gw->max_conns < 1 || gw->max_conns > 65536)
                return usage_error("--max-connections '%s': 1..65536", optarg);
            break;
        case O_MAXBODY:
            gw->body_max = strtoull(optarg, &end, 10);
            if (*end || gw->body_max < 1024 || gw->body_max > (64u << 20))
                return usage_error("--max-body '%s': 1024..67108864", optarg);
            break;
        case O_IDLE:
            if (parse_secs(optarg, &ms) < 0)
                return usage_error("--idle-timeout '%s': seconds", optarg);
            gw->idle_timeout_s = (unsigned)((ms + 999) / 1000);
            break;
        case O_ROUTECONN:
            gw->route_conns_max = (unsigned)strtoul(optarg, &end, 10);
            if (*end || gw->route_conns_max < 1 || gw->route_conns_max > 65536)
                return usage_error("--max-route-connections '%s': 1..65536", optarg);
            break;
        case 'v': gw->verbose = true; break;
        case 'h': fputs(USAGE, stdout); exit(0);
        default: return usage_error("%s", "bad option");
        }
    }
    if (optind < argc)
        return usage_error("unexpected argument '%s'", argv[optind]);
    if (!token_file || !gw->state_dir)
        return usage_error("%s", "--token-file and --state-dir are required");
    if (!gw->provisioner == (gw->npool == 0))
        return usage_error("%s", "give --provisioner or --pool (not both)");
    if (client_read_token(token_file, gw->token, sizeof gw->token, &gw->token_len, &e) < 0)
        return usage_error("--token-file: %s", e.msg);
    if (pool_token_file && client_read_token(pool_token_file, gw->pool_token,
                                             sizeof gw->pool_token, &gw->pool_token_len, &e) < 0)
        return usage_error("--pool-token-file: %s", e.msg);
    return 0;
}

/* Each HTTP connection holds its socket and, while it works, an agent
 * connection (so does each route connection): raise the descriptor limit to
 * the hard one and keep --max-connections within what the routes leave. */
static void fit_fd_limit(struct gw *gw)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
        return;
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    getrlimit(RLIMIT_NOFILE, &rl);
    rlim_t routes = (rlim_t)gw->route_conns_max * 2;      /* a client and an agent socket each */
    rlim_t need = (rlim_t)gw->max_conns * 2 + routes + FD_RESERVE;
    if (rl.rlim_cur != RLIM_INFINITY && need > rl.rlim_cur) {
        gw->max_conns = rl.rlim_cur > 2 * FD_RESERVE + routes
                            ? (unsigned)((rl.rlim_cur - FD_RESERVE - routes) / 2) : 1;
        gw_log("the descriptor limit (%llu) allows %u connections: --max-connections lowered",
               (unsigned long long)rl.rlim_cur, gw->max_conns);
    }
}

int main(int argc, char **argv)
{
    static struct gw gw = {
        .listen_host = "127.0.0.1", .listen_port = 8080, .max_conns = 1024,
        .idle_timeout_s = 600, .body_max = GW_BODY_MAX_DEFAULT, .prov_timeout_ms = 60000,
        .connect_timeout_ms = 10000, .state_fd = -1, .route_conns_max = GW_ROUTE_CONNS_DEFAULT,
        .route_wake = -1,
    };
    int rc = parse_args(&gw, argc, argv);
    if (rc != 0)
        return rc;
    fit_fd_limit(&gw);
    pthread_mutex_init(&gw.lock, NULL);
    signal(SIGPIPE, SIG_IGN);
    /* SIGTERM/SIGINT are taken with sigwait: block them before any thread exists */
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGTERM);
    sigaddset(&stop, SIGINT);
    pthread_sigmask(SIG_BLOCK, &stop, NULL);
    struct sa_err e;
    if (state_open(&gw, &e) < 0 || reaper_start(&gw, &e) < 0 || routes_start(&gw, &e) < 0 ||
        http_start(&gw, &e) < 0) {
        gw_log("%s", e.msg);
        return 1;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(gw.mhd, MHD_DAEMON_INFO_BIND_PORT);
    gw_log("listening on %s:%u", gw.listen_host, info ? info->port : gw.listen_port);
    int sig = 0;
    while (sigwait(&stop, &sig) != 0)
        ;
    gw_log("signal %d: shutting down", sig);
    http_stop(&gw);
    pthread_join(gw.reaper, NULL);
    routes_stop(&gw);
    pthread_mutex_lock(&gw.lock);
    state_save(&gw);
    while (gw.nsess > 0)
        sess_remove(&gw, gw.sess[gw.nsess - 1]);
    for (size_t i = 0; i < gw.nsbx; i++)
        sbx_free(gw.sbx[i]);
    pthread_mutex_unlock(&gw.lock);
    free(gw.sess);
    free(gw.sbx);
    free(gw.pool);
    close(gw.state_fd);
    return 0;
}
