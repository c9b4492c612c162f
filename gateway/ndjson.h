/* ndjson.h — the output lines of the NDJSON streams, encoded by json-c
 * (ndjson.c says why). Kept apart from gw.h: json-c's and jansson's headers
 * cannot be included together (both declare json_object_get). */
#ifndef SA_GW_NDJSON_H
#define SA_GW_NDJSON_H

#include <stddef.h>

struct ndjson;  /* one output-line encoder; its buffers are reused */

struct ndjson *ndjson_new(void);
void ndjson_free(struct ndjson *e);
/* The line {"stream":stream,"data":text} without its newline, as compact
 * JSON; text is n bytes of valid UTF-8 (may hold NUL). The result belongs
 * to e and is valid until the next call or ndjson_free. */
const char *ndjson_line(struct ndjson *e, const char *stream, const char *text, size_t n,
                        size_t *len);

#endif
