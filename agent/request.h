/* request.h — decode one frame and dispatch the request it holds.
 *
 * request.c is the one place that reads a request's fields: the table of
 * request types, the auth gate (guest_check_auth) in front of it, and the
 * parsing and checking of every field. The services (cmd.h, fop.h, guest.h)
 * get parsed values and structs, never a msgpack object; their errors for
 * bad fields are "bad_request" from here. (`connect` is the exception:
 * tunnel.c reads its fields after it stopped the connection's frames.) */
#ifndef SA_REQUEST_H
#define SA_REQUEST_H

#include <stddef.h>
#include <stdint.h>

struct conn;

/* A new connection: its auth state and the hello. */
void req_opened(struct conn *c);
/* Handle the payload of one frame. A payload that cannot be decoded closes
 * the connection (after an error); a bad request gets an error reply. */
void req_handle(struct conn *c, const uint8_t *payload, size_t len);

#endif
