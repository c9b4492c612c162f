/* jsonc.c — the NDJSON output lines of ASCII text, encoded by json-c
 * (ndjson.c chooses: ASCII text comes here, the rest goes to jansson).
 *
 * Why json-c: these lines carry all command output, and jansson's string
 * encoder decodes its input one code point at a time (~150-185 MiB/s on
 * 16 KiB ASCII strings on the 2-core development machine), while json-c's
 * copies runs of bytes that need no escape (~1.6-2 GiB/s on the same
 * strings). docs/gateway.md has the figures.
 *
 * What json-c writes for ASCII, checked by tests/gateway/test_ndjson.c
 * against jansson's decoder: `"` and `\` escaped; \b \f \n \r \t short;
 * other bytes below 0x20 as \u00xx; `/` and DEL raw
 * (JSON_C_TO_STRING_NOSLASHESCAPE). It would pass bytes >= 0x80 through raw,
 * which the SDK cannot take (ndjson.c), so it never sees them.
 *
 * This file includes json-c's headers and never jansson's: the two libraries
 * both export json_object_get and json_object_iter_next. Both version their
 * symbols, so each library's own calls stay inside it, but the gateway's
 * references bind to the first library on the link line: jansson comes
 * first (CMakeLists.txt), and nothing here calls those two names.
 *
 * Memory: its buffers grow to the longest line encoded (GW_LINE_RAW bytes
 * of text, at most 6 x that escaped) and are reused for every line.
 */
#include <json-c/json_object.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>

#include "jsonc.h"

struct jsonc_line {
    struct json_object *line;           /* {"stream": name, "data": text} */
    struct json_object *name, *text;    /* owned by line */
};

/* Allocation failures abort, like xmalloc (protocol/err.h). */
static void jsonc_oom(void)
{
    fputs("sandbox-gateway: out of memory\n", stderr);
    abort();
}

struct jsonc_line *jsonc_line_new(void)
{
    struct jsonc_line *e = calloc(1, sizeof *e);
    if (!e)
        jsonc_oom();
    e->line = json_object_new_object();
    e->name = json_object_new_string("stdout");
    e->text = json_object_new_string("");
    if (!e->line || !e->name || !e->text ||
        json_object_object_add(e->line, "stream", e->name) < 0 ||
        json_object_object_add(e->line, "data", e->text) < 0)
        jsonc_oom();
    return e;
}

void jsonc_line_free(struct jsonc_line *e)
{
    if (!e)
        return;
    json_object_put(e->line);
    free(e);
}

const char *jsonc_line(struct jsonc_line *e, const char *stream, const char *text, size_t n,
                       size_t *len)
{
    size_t out = 0;
    if (n > INT_MAX / 2 || !json_object_set_string(e->name, stream) ||
        !json_object_set_string_len(e->text, text, (int)n))
        jsonc_oom();
    const char *s = json_object_to_json_string_length(
        e->line, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &out);
    if (!s)
        jsonc_oom();
    *len = out;
    return s;
}
