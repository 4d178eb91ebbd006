/* The PROXY protocol (versions 1 and 2), which a proxy puts in front of a
 * relayed TCP stream so the server behind it learns the client's address.
 * Pure encoding and decoding: no I/O. */
#ifndef TCPKIT_PROXY_H
#define TCPKIT_PROXY_H

#include <stddef.h>
#include <stdint.h>

#include <sys/socket.h>

/* Longest header either version produces or accepts: version 1 is at most
 * 107 bytes; version 2 is 16 bytes plus up to 65535 of addresses and TLVs,
 * but tk_proxy_decode refuses v2 headers longer than this (TLVs are skipped,
 * never stored). */
#define TK_PROXY_V1_MAX 107
#define TK_PROXY_V2_MAX 1024
#define TK_PROXY_MAX    TK_PROXY_V2_MAX

/* An address as the header carries it (the same layout as tk_addr, kept
 * here so the codec depends on nothing else in the tree). */
typedef struct {
    struct sockaddr_storage ss;
    socklen_t len; /* 0 when the header had no address */
} tk_proxy_addr;

typedef struct {
    int version; /* 1 or 2 */
    /* 0: a relayed connection, src and dst are set. 1: no addresses (v1
     * "UNKNOWN", v2 LOCAL command or an unspecified family), for example a
     * health check. */
    int local;
    tk_proxy_addr src; /* the client, as the proxy saw it */
    tk_proxy_addr dst; /* the address the client connected to */
} tk_proxy_hdr;

/* Encodes a header of h->version into out[0..cap). src and dst must both be
 * IPv4 or both IPv6 unless h->local (an IPv4-mapped IPv6 address is written
 * as IPv4 when the other is IPv4 or mapped too); a local header is v1
 * "PROXY UNKNOWN" or the v2 LOCAL command. Returns the header length (at most
 * TK_PROXY_V1_MAX), or -EINVAL (bad version, mixed families or one that is
 * neither IPv4 nor IPv6) or -ENOSPC (cap too small; out is left untouched). */
int tk_proxy_encode(const tk_proxy_hdr *h, unsigned char *out, size_t cap);

/* Decodes a version 1 or 2 header at the start of data[0..len). Returns its
 * length (> 0) with *out filled; 0 when the bytes so far are a valid prefix
 * and more are needed; -EINVAL when they are not a PROXY header or are
 * malformed (a v1 line must end within TK_PROXY_V1_MAX bytes); -EMSGSIZE for
 * a v2 header longer than TK_PROXY_V2_MAX. An error is reported at the first
 * byte that shows it, so the answer never depends on how the input was
 * split. *out is written only on success. A v2 PROXY header for UNSPEC, UDP
 * or UNIX addresses decodes as local, as the specification asks of a
 * receiver that does not relay those. */
int tk_proxy_decode(const unsigned char *data, size_t len, tk_proxy_hdr *out);

#endif
