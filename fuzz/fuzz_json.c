/* Fuzzes tk_json_decode_request and tk_json_encode_line. Any input either
 * fails with one of the documented codes and a reason, or gives a request
 * whose shape matches the contract; a request re-encodes to one line that
 * decodes to an equal request. */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tcpkit/codec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    tk_json_request r;
    char err[96];
    memset(err, 'x', sizeof(err));
    int rc = tk_json_decode_request(data, size, &r, err, sizeof(err));
    if (rc != 0) {
        if (rc != TK_JSON_BAD_JSON && rc != TK_JSON_NOT_OBJECT && rc != TK_JSON_BAD_TYPE &&
            rc != TK_JSON_BAD_PAYLOAD)
            abort();
        if (!memchr(err, '\0', sizeof(err)) || err[0] == '\0')
            abort(); /* the reason must be a non-empty C string */
        return 0;
    }
    if (!json_is_object(r.root) || !r.type || !json_is_string(json_object_get(r.root, "type")) ||
        strcmp(r.type, json_string_value(json_object_get(r.root, "type"))) != 0)
        abort();
    if (r.payload &&
        (!json_is_object(r.payload) || r.payload != json_object_get(r.root, "payload")))
        abort();
    if (r.id && r.id != json_object_get(r.root, "id"))
        abort();

    char *line = NULL;
    size_t len = 0;
    if (tk_json_encode_line(r.root, &line, &len) != 0)
        abort();
    if (len < 2 || line[len - 1] != '\n' || memchr(line, '\n', len - 1))
        abort(); /* exactly one line */
    tk_json_request again;
    if (tk_json_decode_request((const unsigned char *)line, len - 1, &again, err, sizeof(err)) != 0)
        abort();
    if (!json_equal(r.root, again.root) || strcmp(r.type, again.type) != 0)
        abort();
    tk_json_request_free(&again);
    free(line);
    tk_json_request_free(&r);
    return 0;
}
