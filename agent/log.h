/* log.h — the agent's log sink: stderr, or /dev/kmsg in PID-1 mode (one
 * line per event). On stderr a line is "sandbox-agent[PID]: LEVEL: ...", or
 * "<PRIO>LEVEL: ..." when stderr is still the journal stream systemd gave the
 * service ($JOURNAL_STREAM), which adds the name and pid itself. */
#ifndef SA_LOG_H
#define SA_LOG_H

enum log_level { LOG_ERR = 0, LOG_WARN = 1, LOG_INFO = 2, LOG_DEBUG = 3 };

void log_set_level(enum log_level l);
/* Write lines to fd (an open /dev/kmsg) as "<prio>sandbox-agent: ..." with the
 * kernel priority of the level; a failed write goes to stderr instead.
 * fd < 0: back to stderr. The sink owns fd. */
void log_set_kmsg(int fd);
void log_msg(enum log_level l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_err(...) log_msg(LOG_ERR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARN, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)

#endif
