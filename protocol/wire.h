/* wire.h — frames and msgpack on the wire (protocol v1, see PROTOCOL.md).
 *
 * A frame is a 4-byte big-endian payload length followed by that many bytes
 * holding exactly one msgpack map. This module:
 *   - finds frame boundaries and rejects oversize lengths before anything is
 *     buffered (wire_frame_peek);
 *   - validates a payload structurally before msgpack-c sees it
 *     (wire_check): every declared count and length must fit in the bytes that
 *     remain, every map key is a string, nesting is at most WIRE_MAX_DEPTH,
 *     the frame holds at most
 *     WIRE_MAX_OBJECTS objects, no ext types. msgpack-c allocates a
 *     map/array's elements up front from the declared count, so after this
 *     check decoding costs sizeof(msgpack_object) (24 bytes) per object, which
 *     msgpack-c's zone chunking (chunks rounded up to powers of two, the rest
 *     of a chunk abandoned) can double: at most ~48 bytes per object, i.e.
 *     ~3 MiB at WIRE_MAX_OBJECTS, plus the first chunk (measured in
 *     tests/test_protocol.c);
 *   - decodes into a caller-owned msgpack_zone (wire_decode); str and bin
 *     objects point into the payload, which must outlive the object;
 *   - reads typed fields out of a decoded map;
 *   - encodes frames into a struct buf with msgpack-c's packer, counting
 *     every map's entries itself (see "writing frames").
 * No syscalls, no globals.
 */
#ifndef SA_WIRE_H
#define SA_WIRE_H

#include <msgpack.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "err.h"

#define WIRE_PROTOCOL_VERSION 1
#define WIRE_HDR_LEN 4
#define WIRE_MAX_FRAME_DEFAULT (1u << 20)   /* 1 MiB */
#define WIRE_MAX_FRAME_MIN 4096u
#define WIRE_MAX_FRAME_LIMIT (16u << 20)    /* 16 MiB: --max-frame ceiling */
#define WIRE_MAX_DEPTH 16
#define WIRE_MAX_OBJECTS 65536
#define WIRE_ZONE_CHUNK 4096

/* Look at the start of a byte stream. Returns 1 and sets *payload_len when a
 * complete header is there (the payload may still be incomplete), 0 when fewer
 * than 4 bytes are there, -1 (code "frame_too_large" or "bad_frame") when the
 * length is 0 or above max_frame. */
int wire_frame_peek(const uint8_t *p, size_t n, uint32_t max_frame, uint32_t *payload_len,
                    struct sa_err *e);

/* The value of "type" when it is the payload's first key, as every message
 * this protocol's encoders write starts (wire_begin): 1 with *t and *tn pointing
 * into p, 0 when the payload does not start that way. No allocation, no full
 * decode: for relaying frames whose kind matters (agent fop.c). */
int wire_peek_type(const uint8_t *p, size_t n, const char **t, size_t *tn);

/* Structural validation of one payload (see above). 0 or -1 ("bad_frame"). */
int wire_check(const uint8_t *p, size_t n, struct sa_err *e);

/* wire_check, then msgpack_unpack into zone. The root must be a map. */
int wire_decode(const uint8_t *p, size_t n, msgpack_zone *zone, msgpack_object *root,
                struct sa_err *e);

/* --- reading fields ------------------------------------------------------ */
/* The value stored under key in map (string keys only), or NULL. */
const msgpack_object *wire_get(const msgpack_object *map, const char *key);
bool wire_obj_is(const msgpack_object *o, const char *s);      /* str equal to s */
bool wire_obj_str(const msgpack_object *o, const char **s, size_t *n);
bool wire_obj_bytes(const msgpack_object *o, const char **s, size_t *n); /* bin or str */
bool wire_obj_uint(const msgpack_object *o, uint64_t *v);
bool wire_obj_int(const msgpack_object *o, int64_t *v);
bool wire_obj_bool(const msgpack_object *o, bool *v);
/* A NUL-terminated copy of a str allocated in zone; NULL if o is not a str or
 * the string contains a NUL byte. */
char *wire_obj_cstr(const msgpack_object *o, msgpack_zone *zone);

/* Typed optional fields: absent (or nil) leaves *v untouched and returns 0;
 * present with the wrong type fills e ("bad_request", naming the key) and
 * returns -1. */
int wire_opt_uint(const msgpack_object *map, const char *key, uint64_t *v, struct sa_err *e);
int wire_opt_int(const msgpack_object *map, const char *key, int64_t *v, struct sa_err *e);
int wire_opt_bool(const msgpack_object *map, const char *key, bool *v, struct sa_err *e);
int wire_opt_cstr(const msgpack_object *map, const char *key, msgpack_zone *zone, char **v,
                  struct sa_err *e);
int wire_opt_bytes(const msgpack_object *map, const char *key, const char **p, size_t *n,
                   struct sa_err *e);

/* --- writing frames ------------------------------------------------------ */
/* Maps count their own entries: wire_map_begin writes a one-byte fixmap
 * header and every wire_key (wire_kv_* call it) counts one entry of the
 * innermost open map; wire_map_end writes the count into the header, and
 * only a map of more than 15 entries moves its body (the bytes after its
 * header, always the tail of the buffer) up by 2 (map16) or 4 (map32) bytes
 * to make room. So the bytes are what msgpack-c writes for the same count:
 * fixmap up to 15 entries, map16 up to 65535, map32 above. Keys are written
 * only through wire_key/wire_key_n; values with the wire_kv_* helpers or
 * msgpack_pack_* on pk (arrays keep their explicit counts), nested maps with
 * wire_map_begin/_end, never msgpack_pack_map. Debug builds assert that maps
 * close in order, that wire_end finds only the frame's own map open, and that
 * the frame is one well-formed msgpack object (wire_check's walk: a key
 * without its value, or a map packed by hand, breaks it). */
#define WIRE_ENC_DEPTH 8   /* maps open at once in one encoder, the frame's own included */

struct wire_enc {
    struct buf *b;
    size_t start;          /* offset from the buffer's head of the 4-byte header */
    msgpack_packer pk;
    unsigned depth;                    /* maps open */
    unsigned floor;                    /* 1 in a frame: its own map is wire_end's */
    size_t map_at[WIRE_ENC_DEPTH];     /* offset from the head of each one's header */
    uint32_t map_n[WIRE_ENC_DEPTH];    /* its entries so far */
};

/* An encoder appending bare msgpack to b, no frame (pieces spliced into a
 * frame later; wire_end must not be called on it; its maps are opened with
 * wire_map_begin and closed with wire_map_end). */
void wire_enc_raw(struct wire_enc *w, struct buf *b);
/* Start a frame at the tail of b and open its map. */
void wire_begin(struct wire_enc *w, struct buf *b);
/* Close the frame's map and patch the frame length in. The frame is then
 * complete in b. */
void wire_end(struct wire_enc *w);
/* Open a map as the next value (after a key, as an array element, or at the
 * top of a raw encoder); wire_map_end closes the innermost open one. The
 * returned depth, passed back to wire_map_end, is checked in debug builds. */
unsigned wire_map_begin(struct wire_enc *w);
void wire_map_end(struct wire_enc *w, unsigned depth);
/* Entries written so far into the innermost open map (for a caller that
 * bounds a frame's objects, PROTOCOL.md §1: a map of n entries is 1 + 2n
 * objects plus what its values hold). */
uint32_t wire_map_entries(const struct wire_enc *w);

/* A key of the innermost open map (counts one entry): NUL-terminated, or n
 * bytes. */
void wire_key(struct wire_enc *w, const char *k);
void wire_key_n(struct wire_enc *w, const char *k, size_t n);
void wire_kv_str(struct wire_enc *w, const char *k, const char *v);
void wire_kv_strn(struct wire_enc *w, const char *k, const char *v, size_t n);
void wire_kv_uint(struct wire_enc *w, const char *k, uint64_t v);
void wire_kv_int(struct wire_enc *w, const char *k, int64_t v);
void wire_kv_bool(struct wire_enc *w, const char *k, bool v);
void wire_kv_bin(struct wire_enc *w, const char *k, const void *p, size_t n);
void wire_kv_nil(struct wire_enc *w, const char *k);
void wire_str(struct wire_enc *w, const char *s);

#endif
