/* request.h — decode one frame and dispatch the request it holds. */
#ifndef SA_REQUEST_H
#define SA_REQUEST_H

#include <stddef.h>
#include <stdint.h>

struct conn;

/* Handle the payload of one frame. A payload that cannot be decoded closes
 * the connection (after an error); a bad request gets an error reply. */
void req_handle(struct conn *c, const uint8_t *payload, size_t len);

#endif
