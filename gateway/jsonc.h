/* jsonc.h — output lines of ASCII text encoded by json-c (jsonc.c says why).
 * Kept apart from gw.h: json-c's and jansson's headers cannot be included
 * together (both declare json_object_get). */
#ifndef SA_GW_JSONC_H
#define SA_GW_JSONC_H

#include <stddef.h>

struct jsonc_line;  /* one encoder; its buffers are reused */

struct jsonc_line *jsonc_line_new(void);
void jsonc_line_free(struct jsonc_line *e);
/* {"stream":stream,"data":text} as compact JSON, without a newline; text is
 * n bytes of ASCII (may hold NUL). The result belongs to e and is valid
 * until the next call or jsonc_line_free. */
const char *jsonc_line(struct jsonc_line *e, const char *stream, const char *text, size_t n,
                       size_t *len);

#endif
