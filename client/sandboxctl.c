/* sandboxctl — drive a sandbox-agent by hand (docs/sandboxctl.md).
 *
 *   sandboxctl [-c ADDR] exec [OPTIONS] -- PROG ARGS...        (ctl_exec.c)
 *   sandboxctl [-c ADDR] ping                                  (ctl_cmds.c)
 *   sandboxctl [-c ADDR] logs [-f] [--from POS] ID
 *   sandboxctl [-c ADDR] wait [--timeout SECS] ID
 *   sandboxctl [-c ADDR] kill [-s SIGNAL] ID
 *   sandboxctl [-c ADDR] release ID... | --all
 *   sandboxctl [-c ADDR] ps [--all] [--json]
 *   sandboxctl [-c ADDR] inspect ID
 *   sandboxctl [-c ADDR] stats [--json]
 *   sandboxctl [-c ADDR] upload|download|get|put|stat|ls|mkdir|rm|mv|chmod ...
 *                        (files: ctl_files.c)
 *   sandboxctl [-c ADDR] forward [BIND:]LOCAL_PORT:GUEST_PORT... | --stdio GUEST_PORT
 *                        (tunnels: ctl_forward.c)
 *   sandboxctl encode      JSON lines on stdin -> frames on stdout  (ctl_codec.c)
 *   sandboxctl decode      frames on stdin -> JSON lines on stdout
 *
 * This file: the usage text, the dispatch table and main. What the command
 * files share (connecting, messages, output) is in ctl_common.c (ctl.h).
 *
 * Exit status: the command's own for exec and wait; 0 success; 1 bad input
 * to encode/decode, an error reply to kill/logs/get, output not writable;
 * 2 usage; 124 wait --timeout ran out; 126 the command could not be started;
 * 127 program not found (exec), no such command (wait); 255 connection or
 * protocol failure.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ctl.h"
#include "wire.h"

#ifndef SA_VERSION
#define SA_VERSION "unknown"
#endif

static const char usage_text[] =
    "usage: sandboxctl [-c ADDR] COMMAND [ARGS...]\n"
    "\n"
    "commands:\n"
    "  ping                       print the agent's version and protocol\n"
    "  exec [OPTIONS] -- PROG ARGS...\n"
    "                             run PROG in the sandbox, streaming its stdin,\n"
    "                             stdout and stderr; exit with its status\n"
    "      --cwd DIR              working directory (default: the agent's workdir)\n"
    "      -e KEY=VAL             set an environment variable (repeatable)\n"
    "      --user NAME            run as this user\n"
    "      --sudo                 run as root\n"
    "      -n                     stdin from /dev/null instead of ours\n"
    "      -t                     run on a pseudo-terminal (interactive)\n"
    "      --timeout SECS         kill the command after SECS seconds\n"
    "      --detach               start it with stdin /dev/null, print its command\n"
    "                             id, exit; read its output with logs\n"
    "  logs [OPTIONS] ID          print the output of command ID that the agent kept\n"
    "      -f, --follow           keep printing new output until the command exits\n"
    "      --from POS             start at this combined log position (default 0)\n"
    "  wait [--timeout SECS] ID   wait for command ID to exit; exit with its status\n"
    "  kill [-s SIGNAL] ID        signal command ID's process group; SIGNAL is a name\n"
    "                             (TERM, SIGKILL, RTMIN+1) or a number; default TERM\n"
    "  release ID... | --all      forget exited commands: their logs and records\n"
    "  ps [OPTIONS]               list the agent's running commands (STARTED is UTC)\n"
    "      -a, --all              also the exited ones it remembers\n"
    "      --json                 one JSON object per command and line, as sent\n"
    "  inspect ID                 print command ID's record as one JSON line\n"
    "  stats [--json]             the sandbox's uptime, load, memory, disk, the agent's\n"
    "                             own use, and CPU and memory of running commands\n"
    "      --json                 the agent's reply as one JSON object on one line\n"
    "\n"
    "files (as the agent's default user; --user NAME or --sudo before the paths;\n"
    "relative remote paths start in the agent's workdir):\n"
    "  upload [--parents] SRC DEST  SRC (a local directory: its contents; a file;\n"
    "                             a .tar/.tar.gz/.tar.zst; - for a tar on stdin)\n"
    "                             extracted into the remote directory DEST\n"
    "      --parents, -p          create DEST if missing\n"
    "      --keep-owners          (--sudo) keep the archive's owners\n"
    "  download [-z] PATH...      a tar of the remote PATHs on stdout (-z: gzip'd)\n"
    "  get REMOTE [LOCAL]         a remote file's bytes into LOCAL (default: stdout)\n"
    "  put [--mode M] [--append] LOCAL REMOTE\n"
    "                             LOCAL's bytes (- for stdin) into the remote file,\n"
    "                             replaced atomically; missing parents are created\n"
    "  stat [-L] [--json] PATH    a remote path's type, size, mode, owner, mtime\n"
    "  ls [-l] [--json] PATH...   a remote directory's entries, sorted\n"
    "  mkdir [-p] [-m MODE] PATH...\n"
    "  rm [-r] [-f] PATH...\n"
    "  mv [-n] FROM TO            rename (-n: fail if TO exists)\n"
    "  chmod MODE PATH...         MODE in octal\n"
    "\n"
    "ports (the agent's `tunnel` capability):\n"
    "  forward [OPTIONS] [BIND:]LOCAL_PORT:GUEST_PORT...\n"
    "                             listen on BIND:LOCAL_PORT (default 127.0.0.1; port 0:\n"
    "                             any free one, printed) and relay each connection to\n"
    "                             GUEST_PORT inside the sandbox, until SIGINT/SIGTERM\n"
    "      --guest-host IP        the address connected to in the guest (default\n"
    "                             127.0.0.1)\n"
    "  forward --stdio GUEST_PORT relay stdin/stdout to GUEST_PORT (ssh ProxyCommand)\n"
    "\n"
    "  encode                     JSON objects (one per line) on stdin -> frames on stdout\n"
    "  decode                     frames on stdin -> JSON objects (one per line) on stdout\n"
    "\n"
    "options:\n"
    "  -c ADDR                    agent address (default: $SANDBOX_AGENT_ADDR):\n"
    "                             unix:PATH, vsock:CID:PORT, tcp:HOST:PORT, fc:UDS_PATH:PORT\n"
    "      --token-file FILE      the shared token, sent when the agent asks for one\n"
    "                             (default: $SANDBOX_AGENT_TOKEN_FILE)\n"
    "  -h, --help                 show this help\n"
    "      --version              show the version\n"
    "\n"
    "exit status: the command's for exec and wait; 0 success; 1 the agent refused\n"
    "(kill, logs, inspect: no such command, a file error, already exited, ...), bad encode/decode\n"
    "input, or output not writable; 2 usage, or a feature this agent lacks;\n"
    "124 wait --timeout ran out; 126 command could not be started; 127 program\n"
    "not found (exec), no such command (wait); 255 connection or protocol failure.\n";

/* --- main ----------------------------------------------------------------- */

/* Started with fd 0, 1 or 2 closed, the agent's socket would take its number
 * and be read as our stdin: put /dev/null there first. */
static void std_fds_open(void)
{
    for (int fd = 0; fd <= 2; fd++) {
        if (fcntl(fd, F_GETFD) >= 0 || errno != EBADF)
            continue;
        int n = open("/dev/null", fd == 0 ? O_RDONLY : O_WRONLY);
        if (n < 0 || (n != fd && (dup2(n, fd) < 0 || close(n) < 0)))
            _exit(EXIT_CONN);
    }
}

int main(int argc, char **argv)
{
    enum { OPT_VERSION = 256, OPT_TOKEN_FILE };
    static const struct option longopts[] = {
        { "help", no_argument, NULL, 'h' },
        { "version", no_argument, NULL, OPT_VERSION },
        { "token-file", required_argument, NULL, OPT_TOKEN_FILE },
        { NULL, 0, NULL, 0 },
    };
    const char *addr = getenv("SANDBOX_AGENT_ADDR");
    token_file = getenv("SANDBOX_AGENT_TOKEN_FILE");
    int ch;
    std_fds_open();
    signal(SIGPIPE, SIG_IGN);
    while ((ch = getopt_long(argc, argv, "+:c:h", longopts, NULL)) != -1) {
        switch (ch) {
        case 'c': addr = optarg; break;
        case OPT_TOKEN_FILE: token_file = optarg; break;
        case 'h': fputs(usage_text, stdout); return 0;
        case OPT_VERSION: printf("sandboxctl %s (protocol %d)\n", SA_VERSION, WIRE_PROTOCOL_VERSION); return 0;
        case ':': return usage_error("option %s needs an argument", opt_name(argv));
        default: return usage_error("unknown option %s", opt_name(argv));
        }
    }
    if (optind >= argc)
        return usage_error("no command given");
    const char *cmd = argv[optind];
    int sub_argc = argc - optind;
    char **sub_argv = argv + optind;
    if (strcmp(cmd, "encode") == 0)
        return verb_encode(sub_argc, sub_argv);
    if (strcmp(cmd, "decode") == 0)
        return verb_decode(sub_argc, sub_argv);
    if (strcmp(cmd, "help") == 0) {
        fputs(usage_text, stdout);
        return 0;
    }
    static const struct {
        const char *name;
        int (*fn)(const char *addr, int argc, char **argv);
    } verbs[] = {
        { "ping", verb_ping }, { "exec", verb_exec }, { "logs", verb_logs }, { "wait", verb_wait },
        { "kill", verb_kill }, { "ps", verb_ps },     { "inspect", verb_inspect },
        { "release", verb_release },
        { "stats", verb_stats },
        { "upload", verb_upload }, { "download", verb_download }, { "get", verb_fget },
        { "put", verb_put }, { "stat", verb_stat }, { "ls", verb_ls }, { "mkdir", verb_mkdir },
        { "rm", verb_rm }, { "mv", verb_mv }, { "chmod", verb_chmod },
        { "forward", verb_forward },
    };
    for (size_t i = 0; i < sizeof verbs / sizeof verbs[0]; i++)
        if (strcmp(cmd, verbs[i].name) == 0)
            return verbs[i].fn(addr, sub_argc, sub_argv);
    return usage_error("unknown command '%s'", cmd);
}
