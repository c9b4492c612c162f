/* ndjson.c — the output lines of the NDJSON streams,
 * {"stream":"stdout"|"stderr","data":TEXT}, in ASCII.
 *
 * ASCII only: the SDK's NDJSON parser (the `jsonlines` package) decodes each
 * network chunk to a string on its own, so a raw UTF-8 character split
 * between two chunks would reach the user as U+FFFD. Non-ASCII is escaped
 * \uXXXX (a surrogate pair above U+FFFF).
 *
 * Text that is ASCII already (most command output) is encoded by json-c
 * (jsonc.c), ten times faster than jansson's string encoder; text with any
 * non-ASCII character by jansson with JSON_ENSURE_ASCII, which json-c lacks.
 * utf8_view says which, from the pass that checks the UTF-8 anyway.
 */
#include "gw.h"
#include "jsonc.h"

struct ndjson {
    struct jsonc_line *c;
    struct buf j;               /* jansson's line */
};

struct ndjson *ndjson_new(void)
{
    struct ndjson *e = xcalloc(1, sizeof *e);
    e->c = jsonc_line_new();
    buf_init(&e->j);
    return e;
}

void ndjson_free(struct ndjson *e)
{
    if (!e)
        return;
    jsonc_line_free(e->c);
    buf_free(&e->j);
    free(e);
}

static int append_cb(const char *p, size_t n, void *data)
{
    buf_append(data, p, n);
    return 0;
}

const char *ndjson_line(struct ndjson *e, const char *stream, const uint8_t *text, size_t n,
                        bool ascii, size_t *len)
{
    if (ascii)
        return jsonc_line(e->c, stream, (const char *)text, n, len);
    buf_reset(&e->j, NDJSON_KEEP);
    json_t *j = json_pack("{s:s, s:o}", "stream", stream, "data",
                          json_stringn_nocheck((const char *)text, n));
    json_dump_callback(j, append_cb, &e->j, JSON_COMPACT | JSON_ENSURE_ASCII);
    json_decref(j);
    *len = buf_size(&e->j);
    return (const char *)buf_ptr(&e->j);
}
