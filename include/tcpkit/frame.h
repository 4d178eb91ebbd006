/* The tcpkit file-transfer frame protocol: a 6-byte header
 * [version u8][type u8][length u32 big-endian] and the bodies of every frame
 * type of versions 1 and 2. Pure functions over bytes, no I/O, no allocation:
 * decoders return views into the caller's buffer. docs/PROTOCOL.md
 * ("File transfer") describes every field with byte-level examples. */
#ifndef TCPKIT_FRAME_H
#define TCPKIT_FRAME_H

#include <stddef.h>
#include <stdint.h>

#include "tcpkit/codec.h"

#define TK_FRAME_HEADER 6
#define TK_FRAME_V1     1
#define TK_FRAME_V2     2
#define TK_FRAME_STREAM 4  /* bytes of the stream id that opens a v2 body */
#define TK_FRAME_DIGEST 32 /* SHA-256 */
#define TK_FRAME_TAG    32 /* HMAC-SHA256 tag appended to authenticated frames */
#define TK_FRAME_NONCE  16

/* Version 1 types (seed-compatible). */
enum {
    TK_V1_REQUEST = 1,  /* client: file name */
    TK_V1_RESPONSE = 2, /* server: "name:size" */
    TK_V1_DATA = 3,     /* server: file bytes */
    TK_V1_END = 4,      /* server: empty */
    TK_V1_ERROR = 5,    /* server: message */
};

/* Version 2 types. Every v2 body but HELLO's starts with a u32 stream id. */
enum {
    TK_V2_GET = 1,
    TK_V2_OPEN = 2,
    TK_V2_DATA = 3,
    TK_V2_END = 4,
    TK_V2_ERROR = 5,
    TK_V2_LIST = 6,
    TK_V2_ENTRIES = 7,
    TK_V2_STAT = 8,
    TK_V2_INFO = 9,
    TK_V2_PUT = 10,
    TK_V2_READY = 11,
    TK_V2_DONE = 12,
    TK_V2_CANCEL = 13,
    TK_V2_PING = 14,
    TK_V2_PONG = 15,
    TK_V2_HELLO = 16,
};

/* HELLO flags and features. */
#define TK_HELLO_AUTH   0x01u   /* flags: HMAC-SHA256 on every later frame */
#define TK_FEATURE_ZSTD 0x0001u /* features: zstd-compressed DATA */

/* GET, OPEN and PUT flags. */
#define TK_XFER_ZSTD     0x01u /* DATA bodies are zstd frames */
#define TK_PUT_RESUME    0x02u /* PUT: continue an interrupted upload */
#define TK_PUT_OVERWRITE 0x04u /* PUT: replace an existing file */
#define TK_STAT_DIGEST   0x01u /* STAT: include the SHA-256 */

/* Entry kinds in ENTRIES and INFO. */
enum { TK_KIND_FILE = 1, TK_KIND_DIR = 2, TK_KIND_LINK = 3, TK_KIND_OTHER = 4 };

/* v2 ERROR codes. */
typedef enum {
    TK_FERR_NOT_FOUND = 1,    /* no such file or directory */
    TK_FERR_NOT_REGULAR = 2,  /* not a regular file (FIFO, device, socket...) */
    TK_FERR_FORBIDDEN = 3,    /* the name leaves the root or is not allowed */
    TK_FERR_BAD_REQUEST = 4,  /* malformed frame or field */
    TK_FERR_TOO_LARGE = 5,    /* a size or length over a limit */
    TK_FERR_EXISTS = 6,       /* PUT without overwrite onto an existing file */
    TK_FERR_BUSY = 7,         /* too many transfers, or this upload is in progress */
    TK_FERR_NO_SPACE = 8,     /* not enough free space for the upload */
    TK_FERR_READ_ONLY = 9,    /* uploads are not enabled */
    TK_FERR_DIGEST = 10,      /* the SHA-256 did not match */
    TK_FERR_IO = 11,          /* a read or write failed on the server */
    TK_FERR_UNSUPPORTED = 12, /* unknown version, type or feature */
    TK_FERR_AUTH = 13,        /* authentication required or failed */
    TK_FERR_SHUTDOWN = 14,    /* the server is shutting down */
    TK_FERR_CHANGED = 15,     /* the file changed while it was sent */
    TK_FERR_CANCELLED = 16,   /* the peer cancelled the stream */
    TK_FERR_NOT_DIR = 17,     /* LIST of something that is not a directory */
    TK_FERR_BAD_OFFSET = 18,  /* GET offset past the end of the file */
    TK_FERR_PROTOCOL = 19,    /* a frame out of place (connection-level) */
    TK_FERR_TIMEOUT = 20,     /* the peer went silent */
    TK_FERR_MAX
} tk_file_err;

/* A short lower-case name for an error code ("not_found"...). */
const char *tk_file_err_name(unsigned code);

typedef struct {
    uint8_t version;
    uint8_t type;
    uint32_t length; /* payload bytes that follow the header */
} tk_frame_hdr;

/* Reads a header from p[0..n): 1 when n >= 6 (*h filled), 0 when more bytes
 * are needed. Any version and type decode; the caller judges them. */
int tk_frame_hdr_decode(const unsigned char *p, size_t n, tk_frame_hdr *h);

/* Splits the next whole frame off data[0..len), allowing payloads of at most
 * max bytes. TK_CODEC_OK: *h and *payload set, *consumed = 6 + h->length.
 * TK_CODEC_NEED: *consumed = 0 (*h is set once 6 bytes are there).
 * TK_CODEC_TOO_LONG: *h holds the over-long header; nothing consumed or
 *   allocated. Same answers whether data arrives whole or byte by byte. */
tk_codec_status tk_frame_next(const unsigned char *data, size_t len, uint32_t max, tk_frame_hdr *h,
                              const unsigned char **payload, size_t *consumed);

/* Writes a 6-byte header. */
void tk_frame_hdr_encode(unsigned char out[TK_FRAME_HEADER], uint8_t version, uint8_t type,
                         uint32_t length);

/* Big-endian helpers. */
uint16_t tk_get_u16(const unsigned char *p);
uint32_t tk_get_u32(const unsigned char *p);
uint64_t tk_get_u64(const unsigned char *p);
void tk_put_u16(unsigned char *p, uint16_t v);
void tk_put_u32(unsigned char *p, uint32_t v);
void tk_put_u64(unsigned char *p, uint64_t v);

/* ---- Version 1 ---- */

/* Parses a RESPONSE body "name:size" (the size after the last ':').
 * Returns 0 with *size set, or -EINVAL. */
int tk_v1_parse_response(const unsigned char *p, size_t n, uint64_t *size);

/* The message a version-1 ERROR frame carries for a TK_FERR_* code (the
 * seed's "File not found" for not_found); is_dir picks "Is a directory"
 * over "Not a regular file". */
const char *tk_v1_error_message(unsigned code, int is_dir);

/* The TK_FERR_* code a version-1 error message stands for (TK_FERR_IO for
 * a message tcpkit does not send). */
unsigned tk_v1_error_code(const unsigned char *msg, size_t n);

/* ---- Heartbeats ---- */

/* One side's view of a version-2 connection's liveness. A side PINGs when it
 * has heard nothing for an interval; the peer is gone when nothing arrived
 * for three intervals and none of our data moved meanwhile. Our own PINGs
 * are not progress: a dead peer's kernel, or our send buffer, takes them. */
typedef struct {
    uint64_t heard_ms; /* the last frame received */
    uint64_t moved_ms; /* the last time our data (not PINGs) left */
    uint64_t data_out; /* bytes of our data sent so far */
    uint64_t ping_out; /* bytes of PINGs sent so far */
} tk_heartbeat;

typedef enum { TK_HB_QUIET = 0, TK_HB_PING, TK_HB_DEAD } tk_hb_action;

/* Starts the clock at now_ms. */
void tk_heartbeat_init(tk_heartbeat *h, uint64_t now_ms);

/* What to do at a tick: bytes_out is everything sent on the connection. */
tk_hb_action tk_heartbeat_tick(tk_heartbeat *h, uint64_t now_ms, uint64_t bytes_out,
                               uint32_t interval_ms);

/* A PING of frame_len bytes was queued. */
void tk_heartbeat_pinged(tk_heartbeat *h, size_t frame_len);

/* ---- Version 2 bodies ---- */

/* HELLO body: flags u8, reserved u8 (0), features u16, max_frame u32,
 * nonce[16]: 24 bytes. */
#define TK_HELLO_LEN 24
typedef struct {
    uint8_t flags;
    uint16_t features;
    uint32_t max_frame; /* largest payload this side accepts */
    unsigned char nonce[TK_FRAME_NONCE];
} tk_hello;

/* Decodes a HELLO body of exactly TK_HELLO_LEN bytes with its reserved byte
 * 0: 0 or -EINVAL. */
int tk_hello_decode(const unsigned char *p, size_t n, tk_hello *h);
/* Writes TK_HELLO_LEN bytes. */
void tk_hello_encode(unsigned char out[TK_HELLO_LEN], const tk_hello *h);

/* A decoded v2 body; which fields are set depends on the type. Byte views
 * (name, data, msg) point into the decoded buffer. */
typedef struct {
    uint32_t stream;
    uint8_t flags; /* GET, OPEN, PUT, STAT */
    uint8_t kind;  /* INFO */
    uint16_t code; /* ERROR */
    uint64_t a; /* GET, OPEN, READY: offset; PUT, DONE, INFO: size; END: count; PING/PONG: token */
    uint64_t b; /* OPEN: size */
    int64_t mtime;  /* OPEN, INFO: nanoseconds since the epoch */
    int has_digest; /* END, DONE, INFO */
    const unsigned char *digest;
    const unsigned char *name; /* GET, LIST, STAT, PUT */
    size_t name_len;
    const unsigned char *data; /* DATA, ENTRIES (records), ERROR (message) */
    size_t data_len;
} tk_v2_msg;

/* Decodes the body of a v2 frame of the given type (without any HMAC tag).
 * Returns 0, -EINVAL for a malformed body (PING and PONG on a stream other
 * than 0 included), or -ENOTSUP for an unknown type (HELLO is decoded by
 * tk_hello_decode, not here). */
int tk_v2_decode(uint8_t type, const unsigned char *p, size_t n, tk_v2_msg *m);

/* Fixed part of each body (bytes before a variable name, data or message),
 * for reserving space: GET 13, OPEN 29, DATA 4, END 12 (+32 with a digest),
 * ERROR 6, LIST 4, ENTRIES 4, STAT 5, INFO 21 (+32), PUT 13, READY 12,
 * DONE 44, CANCEL 4, PING 12, PONG 12. */
size_t tk_v2_fixed_len(uint8_t type);

/* Encoders: each writes a complete frame (header included) into out, which
 * must hold TK_FRAME_HEADER + tk_v2_fixed_len(type) + the variable part, and
 * returns the bytes written. The header's length leaves room for tag_len
 * bytes of HMAC tag to be appended by the caller (0 without auth). */
size_t tk_v2_encode_get(unsigned char *out, size_t tag_len, uint32_t stream, uint64_t offset,
                        uint8_t flags, const void *name, size_t name_len);
size_t tk_v2_encode_open(unsigned char *out, size_t tag_len, uint32_t stream, uint64_t size,
                         uint64_t offset, int64_t mtime_ns, uint8_t flags);
/* DATA: writes only the header and stream id; data_len bytes follow. */
size_t tk_v2_encode_data_head(unsigned char *out, size_t tag_len, uint32_t stream, size_t data_len);
/* END: digest may be NULL (LIST streams). */
size_t tk_v2_encode_end(unsigned char *out, size_t tag_len, uint32_t stream, uint64_t count,
                        const unsigned char *digest);
size_t tk_v2_encode_error(unsigned char *out, size_t tag_len, uint32_t stream, uint16_t code,
                          const void *msg, size_t msg_len);
/* LIST and STAT share the shape "stream [flags] name". */
size_t tk_v2_encode_list(unsigned char *out, size_t tag_len, uint32_t stream, const void *name,
                         size_t name_len);
size_t tk_v2_encode_stat(unsigned char *out, size_t tag_len, uint32_t stream, uint8_t flags,
                         const void *name, size_t name_len);
/* ENTRIES: writes the header and stream id; records_len bytes of records
 * (tk_entry_encode) follow. */
size_t tk_v2_encode_entries_head(unsigned char *out, size_t tag_len, uint32_t stream,
                                 size_t records_len);
/* INFO: digest may be NULL. */
size_t tk_v2_encode_info(unsigned char *out, size_t tag_len, uint32_t stream, uint8_t kind,
                         uint64_t size, int64_t mtime_ns, const unsigned char *digest);
size_t tk_v2_encode_put(unsigned char *out, size_t tag_len, uint32_t stream, uint64_t size,
                        uint8_t flags, const void *name, size_t name_len);
size_t tk_v2_encode_ready(unsigned char *out, size_t tag_len, uint32_t stream, uint64_t offset);
size_t tk_v2_encode_done(unsigned char *out, size_t tag_len, uint32_t stream, uint64_t size,
                         const unsigned char *digest);
size_t tk_v2_encode_cancel(unsigned char *out, size_t tag_len, uint32_t stream);
/* PING and PONG: type is TK_V2_PING or TK_V2_PONG; stream is 0. */
size_t tk_v2_encode_ping(unsigned char *out, size_t tag_len, uint8_t type, uint64_t token);
/* HELLO (no stream id). */
size_t tk_v2_encode_hello(unsigned char *out, size_t tag_len, const tk_hello *h);

/* ---- Authentication (HMAC-SHA256 with a pre-shared key) ---- */

/* Derives the per-connection keys from the pre-shared key, the client's
 * HELLO body and the server's nonce. Returns 0 or -EIO. */
int tk_frame_derive_keys(const unsigned char *psk, size_t psk_len,
                         const unsigned char client_hello[TK_HELLO_LEN],
                         const unsigned char server_nonce[TK_FRAME_NONCE],
                         unsigned char c2s[TK_FRAME_TAG], unsigned char s2c[TK_FRAME_TAG]);

/* The MAC of one direction: its key and the sequence number of the next
 * frame. */
typedef struct tk_frame_mac tk_frame_mac;

/* Creates a MAC state at sequence 0; 0 or -ENOMEM / -EIO. */
int tk_frame_mac_new(const unsigned char key[TK_FRAME_TAG], tk_frame_mac **out);

/* Frees it (NULL is ignored) and wipes the key. */
void tk_frame_mac_free(tk_frame_mac *m);

/* Tags the next frame: header (6 bytes, its length already counting the
 * tag) and body[0..n). Advances the sequence. Returns 0 or -EIO. */
int tk_frame_mac_sign(tk_frame_mac *m, const unsigned char *hdr, const unsigned char *body,
                      size_t n, unsigned char tag[TK_FRAME_TAG]);

/* Checks the tag of the next received frame in constant time and advances
 * the sequence. Returns 0, or -EBADMSG on a mismatch. */
int tk_frame_mac_verify(tk_frame_mac *m, const unsigned char *hdr, const unsigned char *body,
                        size_t n, const unsigned char tag[TK_FRAME_TAG]);

/* ---- Directory entries (ENTRIES records) ---- */

/* kind u8, size u64, mtime_ns i64, name_len u16, name: 19 + name_len bytes. */
#define TK_ENTRY_FIXED 19
typedef struct {
    uint8_t kind;
    uint64_t size;
    int64_t mtime;
    const unsigned char *name;
    size_t name_len;
} tk_entry;

/* Writes one record (name_len <= 65535) and returns its length. */
size_t tk_entry_encode(unsigned char *out, const tk_entry *e);

/* Decodes the record at p[0..n): returns its length, or 0 if malformed or
 * truncated. */
size_t tk_entry_decode(const unsigned char *p, size_t n, tk_entry *e);

#endif
