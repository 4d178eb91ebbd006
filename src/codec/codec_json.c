/* JSON-lines requests through jansson. */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tcpkit/codec.h"

#define TK_JSON_MAX_DEPTH 64

/* Depth of the deepest nesting, found without recursion limits of our own:
 * a bracket scan that skips string contents. */
static size_t nesting_depth(const unsigned char *s, size_t n)
{
    size_t depth = 0, max = 0;
    int in_string = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = s[i];
        if (in_string) {
            if (c == '\\')
                i++;
            else if (c == '"')
                in_string = 0;
        } else if (c == '"') {
            in_string = 1;
        } else if (c == '{' || c == '[') {
            if (++depth > max)
                max = depth;
        } else if ((c == '}' || c == ']') && depth > 0) {
            depth--;
        }
    }
    return max;
}

int tk_json_decode_request(const unsigned char *line, size_t len, tk_json_request *out, char *err,
                           size_t errcap)
{
    memset(out, 0, sizeof(*out));
    if (nesting_depth(line, len) > TK_JSON_MAX_DEPTH) {
        snprintf(err, errcap, "nesting deeper than %d levels", TK_JSON_MAX_DEPTH);
        return TK_JSON_BAD_JSON;
    }
    json_error_t je;
    json_t *root = json_loadb((const char *)line, len,
                              JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL | JSON_DECODE_ANY, &je);
    if (!root) {
        snprintf(err, errcap, "invalid JSON at byte %d: %s", je.position, je.text);
        return TK_JSON_BAD_JSON;
    }
    if (!json_is_object(root)) {
        json_decref(root);
        snprintf(err, errcap, "a request must be a JSON object");
        return TK_JSON_NOT_OBJECT;
    }
    json_t *type = json_object_get(root, "type");
    if (!json_is_string(type)) {
        json_decref(root);
        snprintf(err, errcap, "\"type\" must be a string");
        return TK_JSON_BAD_TYPE;
    }
    json_t *payload = json_object_get(root, "payload");
    if (payload && !json_is_object(payload)) {
        json_decref(root);
        snprintf(err, errcap, "\"payload\" must be an object");
        return TK_JSON_BAD_PAYLOAD;
    }
    out->root = root;
    out->type = json_string_value(type);
    out->payload = payload;
    out->id = json_object_get(root, "id");
    return 0;
}

void tk_json_request_free(tk_json_request *r)
{
    json_decref(r->root);
    memset(r, 0, sizeof(*r));
}

int tk_json_encode_line(const tk_json *obj, char **out, size_t *out_len)
{
    size_t need = json_dumpb(obj, NULL, 0, JSON_COMPACT);
    if (need == 0)
        return -EINVAL;
    char *buf = malloc(need + 1);
    if (!buf)
        return -ENOMEM;
    json_dumpb(obj, buf, need, JSON_COMPACT);
    buf[need] = '\n';
    *out = buf;
    *out_len = need + 1;
    return 0;
}
