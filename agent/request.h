/* request.h — the services' face to transport (main wires these into
 * conn_ops): greet a connection, decode one frame and dispatch the request it
 * holds (the table, the auth gate). */
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
