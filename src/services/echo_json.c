/* The echo JSON-lines framing: {"type":..., "payload":{...}, "id":...} in,
 * {"type":..., "id":..., "payload":{"status":"ok", ...}} out. */
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "echo_internal.h"
#include "tcpkit/text.h"

static void send_object(tk_conn *c, json_t *obj)
{
    char *text;
    size_t len;
    if (tk_json_encode_line(obj, &text, &len) == 0) {
        (void)tk_conn_write(c, text, len);
        free(text);
    }
    json_decref(obj);
}

static json_t *response(const char *type, json_t *id, json_t *payload)
{
    json_t *obj = json_object();
    json_object_set_new(obj, "type", json_string(type));
    if (id)
        json_object_set(obj, "id", id);
    json_object_set_new(obj, "payload", payload);
    return obj;
}

static void send_error(tk_conn *c, json_t *id, const char *code, const char *message)
{
    json_t *p = json_pack("{s:s, s:s, s:s}", "status", "error", "code", code, "message", message);
    send_object(c, response("error", id, p));
}

void echo_json_notice(tk_conn *c, const char *type, const char *message)
{
    send_object(c, response(type, NULL, json_pack("{s:s}", "message", message)));
}

static json_t *stats_payload(tk_echo *e)
{
    tk_metrics_snapshot s;
    tk_metrics_read(e->metrics, &s);
    json_t *p = json_pack(
        "{s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:f, s:I, s:I}", "status", "ok", "conns_total",
        (json_int_t)s.conns_total, "conns_active", (json_int_t)s.conns_active, "conns_rejected",
        (json_int_t)s.conns_rejected, "bytes_in", (json_int_t)s.bytes_in, "bytes_out",
        (json_int_t)s.bytes_out, "messages", (json_int_t)s.messages, "resp_avg_us", s.resp_avg_us,
        "resp_p50_us", (json_int_t)s.resp_p50_us, "resp_p99_us", (json_int_t)s.resp_p99_us);
    json_object_set_new(p, "closed_idle", json_integer((json_int_t)s.closes[TK_CLOSE_IDLE]));
    json_object_set_new(p, "closed_stall", json_integer((json_int_t)s.closes[TK_CLOSE_STALL]));
    json_object_set_new(p, "closed_limit", json_integer((json_int_t)s.closes[TK_CLOSE_LIMIT]));
    return p;
}

/* Applies a text command to payload.data; NULL when data is missing. */
static json_t *transform(tk_echo_cmd cmd, json_t *payload)
{
    json_t *data = payload ? json_object_get(payload, "data") : NULL;
    if (!json_is_string(data))
        return NULL;
    const unsigned char *in = (const unsigned char *)json_string_value(data);
    size_t n = json_string_length(data);
    unsigned char *out = malloc(4 * n + 1);
    if (!out)
        return NULL;
    ssize_t r = (ssize_t)n;
    if (cmd == TK_ECHO_CMD_UPPER)
        r = tk_utf8_upper(in, n, out, 4 * n + 1);
    else if (cmd == TK_ECHO_CMD_LOWER)
        r = tk_utf8_lower(in, n, out, 4 * n + 1);
    else if (cmd == TK_ECHO_CMD_REVERSE)
        tk_utf8_reverse(in, n, out);
    else
        memcpy(out, in, n);
    json_t *p = json_pack("{s:s, s:s%}", "status", "ok", "data", (const char *)out, (size_t)r);
    free(out);
    return p;
}

int echo_json_line(echo_client *cl, const unsigned char *line, size_t n)
{
    if (n == 0)
        return 0; /* blank lines between objects are ignored */
    tk_conn *c = cl->conn;
    tk_json_request req;
    char why[160];
    int rc = tk_json_decode_request(line, n, &req, why, sizeof(why));
    if (rc == TK_JSON_BAD_JSON) {
        send_error(c, NULL, "bad_json", why);
        return 1;
    }
    if (rc < 0) {
        send_error(c, NULL, "bad_request", why);
        return 1;
    }
    /* The seeds' generic JSON client sends {"type":"request","payload":{"data":...}}
     * and expects {"type":"response","payload":{"status":"received","echo":...}}. */
    if (strcmp(req.type, "request") == 0) {
        json_t *data = req.payload ? json_object_get(req.payload, "data") : NULL;
        json_t *p = json_pack("{s:s, s:o}", "status", "received", "echo",
                              json_is_string(data) ? json_incref(data) : json_string(""));
        send_object(c, response("response", req.id, p));
        tk_json_request_free(&req);
        return 1;
    }
    tk_echo_cmd cmd = tk_echo_cmd_by_name(req.type, strlen(req.type));
    json_t *p = NULL;
    char when[40];
    switch (cmd) {
    case TK_ECHO_CMD_ECHO:
    case TK_ECHO_CMD_UPPER:
    case TK_ECHO_CMD_LOWER:
    case TK_ECHO_CMD_REVERSE:
        p = transform(cmd, req.payload);
        if (!p) {
            send_error(c, req.id, "bad_request", "payload.data must be a string");
            break;
        }
        send_object(c, response(req.type, req.id, p));
        break;
    case TK_ECHO_CMD_TIME:
        echo_format_time(when, sizeof(when));
        send_object(
            c, response(req.type, req.id, json_pack("{s:s, s:s}", "status", "ok", "time", when)));
        break;
    case TK_ECHO_CMD_STATS:
        send_object(c, response(req.type, req.id, stats_payload(cl->el->e)));
        break;
    case TK_ECHO_CMD_QUIT:
        send_object(
            c, response("QUIT", req.id,
                        json_pack("{s:s, s:s}", "status", "ok", "message", ECHO_GOODBYE_TEXT)));
        tk_conn_close_after_flush(c, TK_CLOSE_LOCAL);
        break;
    case TK_ECHO_CMD_PLAIN:
    case TK_ECHO_CMD_UNKNOWN:
        snprintf(why, sizeof(why), "unknown type \"%.64s\"", req.type);
        send_error(c, req.id, "unknown_type", why);
        break;
    }
    tk_json_request_free(&req);
    return 1;
}

void echo_json_too_long(echo_client *cl)
{
    char why[80];
    snprintf(why, sizeof(why), "line longer than %zu bytes", cl->el->e->cfg.max_line);
    send_error(cl->conn, NULL, "too_long", why);
}
