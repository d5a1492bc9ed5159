/*
 * chat_impl.h - private helpers shared by chat_json.c, chat_encode.c and chat_parse.c.
 */
#ifndef HD_COORDINATOR_CHAT_IMPL_H
#define HD_COORDINATOR_CHAT_IMPL_H

#include "hadal/chat.h"

#include <stdbool.h>
#include <stdint.h>

/* Python truthiness of a JSON value (NULL = absent = false). */
bool chat_py_truthy(const hd_json_t *v);
/* Append repr(float(@d)) as Python prints it (json.dumps uses float.__repr__). */
void chat_py_float_repr(double d, hd_buf_t *out);

#endif /* HD_COORDINATOR_CHAT_IMPL_H */
