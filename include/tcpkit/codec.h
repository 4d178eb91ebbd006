/* Codecs: pure functions over bytes, no I/O. Each returns "a message",
 * "need more bytes" or "error", and gives the same answers whether the input
 * arrives whole or one byte at a time. */
#ifndef TCPKIT_CODEC_H
#define TCPKIT_CODEC_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
    TK_CODEC_OK = 0,       /* one message decoded */
    TK_CODEC_NEED = 1,     /* incomplete: call again with more bytes */
    TK_CODEC_TOO_LONG = 2, /* the message passes the configured limit */
} tk_codec_status;

/* ---- Lines: bytes up to '\n'; a '\r' before it is dropped. ---- */

/* Decoder state: the limit, how far the current partial line was already
 * searched, and whether an over-long line is being skipped. */
typedef struct {
    size_t max_line;
    size_t scanned;
    int discarding;
} tk_line_decoder;

/* Prepares a decoder for lines of at most max_line bytes (not counting the
 * '\n'; a '\r' before it counts). */
void tk_line_init(tk_line_decoder *d, size_t max_line);

/* Finds the next line in data[0..len), which must start with the bytes not
 * consumed by the previous call. Sets *consumed to the bytes to drop.
 * TK_CODEC_OK: *line and *line_len are the line without "\n" or "\r\n".
 * TK_CODEC_NEED: no complete line yet (*consumed is non-zero only while the
 *   rest of an over-long line is skipped).
 * TK_CODEC_TOO_LONG: reported once per over-long line; its bytes up to and
 *   including the next '\n' are dropped, then decoding resumes. */
tk_codec_status tk_line_next(tk_line_decoder *d, const unsigned char *data, size_t len,
                             const unsigned char **line, size_t *line_len, size_t *consumed);

/* ---- Length-prefixed frames: [u32 big-endian length][bytes]. ---- */

#define TK_LEN_HEADER 4

/* Decodes one frame from data[0..len) with payloads of at most max_frame.
 * TK_CODEC_OK: *payload and *payload_len set, *consumed = 4 + payload_len.
 * TK_CODEC_NEED: *consumed = 0.
 * TK_CODEC_TOO_LONG: *payload_len is the declared length; nothing consumed,
 *   nothing allocated. The stream cannot be resynchronised. */
tk_codec_status tk_len_next(const unsigned char *data, size_t len, size_t max_frame,
                            const unsigned char **payload, size_t *payload_len, size_t *consumed);

/* Writes the 4-byte big-endian header for an n-byte payload. */
void tk_len_header(unsigned char out[TK_LEN_HEADER], uint32_t n);

/* ---- JSON lines: one object per line (framing by tk_line_next). ---- */

typedef struct json_t tk_json; /* a jansson value */

/* A decoded request object: {"type": "NAME", "payload": {...}, "id": any}. */
typedef struct {
    tk_json *root;    /* owns everything below */
    const char *type; /* the "type" string */
    tk_json *payload; /* an object, or NULL when absent */
    tk_json *id;      /* any value, or NULL when absent */
} tk_json_request;

/* Error codes of tk_json_decode_request. */
#define TK_JSON_BAD_JSON    (-1) /* not valid JSON (or not UTF-8) */
#define TK_JSON_NOT_OBJECT  (-2) /* valid JSON but not an object */
#define TK_JSON_BAD_TYPE    (-3) /* "type" missing or not a string */
#define TK_JSON_BAD_PAYLOAD (-4) /* "payload" present but not an object */

/* Parses one line as a request. Returns 0, or a TK_JSON_* code with a
 * human-readable reason in err. Nesting deeper than 64 levels is refused. */
int tk_json_decode_request(const unsigned char *line, size_t len, tk_json_request *out, char *err,
                           size_t errcap);

/* Releases what tk_json_decode_request() allocated. */
void tk_json_request_free(tk_json_request *r);

/* Serialises obj compactly with a trailing '\n' into a new buffer (*out,
 * freed with free()). Returns 0 or -ENOMEM. */
int tk_json_encode_line(const tk_json *obj, char **out, size_t *out_len);

#endif
