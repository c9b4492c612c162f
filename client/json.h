/* json.h — JSON text <-> msgpack objects, for typing protocol frames by hand.
 *
 * Mapping (both directions):
 *   object -> map (keys in text order, duplicates kept), array -> array,
 *   string -> str, true/false/null -> bool/nil,
 *   integer (no fraction, no exponent) -> int over the whole int64 and uint64
 *   range (anything outside it is an error, never a silent float),
 *   any other number -> float64,
 *   {"$base64":"..."} (that single key, a string value) -> bin.
 * Writing: str and bin are JSON strings when they are valid UTF-8 (control
 * characters, '"' and '\' escaped), otherwise {"$base64":"..."}; floats use the
 * shortest text that reads back to the same value and always look like floats
 * ("1.0", "1e+300"); NaN and infinities, which JSON cannot hold, become null;
 * non-string map keys are written as strings holding their JSON text.
 *
 * The parser is bounded: nesting at most JSON_MAX_DEPTH containers, strings
 * must be valid UTF-8 with no raw control characters, \u escapes must pair
 * surrogates properly (a lone surrogate is an error), nothing may follow the
 * value but whitespace. Errors follow err.h (code "bad_json") and name the
 * byte offset. Objects are allocated in the caller's zone; str/bin never point
 * into the input text.
 */
#ifndef SA_JSON_H
#define SA_JSON_H

#include <msgpack.h>
#include <stdbool.h>
#include <stddef.h>

#include "buf.h"
#include "err.h"

#define JSON_MAX_DEPTH 64

/* Parse exactly one JSON value from p[0..n). */
int json_parse(const char *p, size_t n, msgpack_zone *zone, msgpack_object *out,
               struct sa_err *e);

/* Append the compact JSON text of o to b (no newline). */
void json_write(struct buf *b, const msgpack_object *o);

/* Well-formed UTF-8: no overlong forms, no surrogates, nothing above U+10FFFF. */
bool json_utf8_valid(const void *p, size_t n);

#endif
