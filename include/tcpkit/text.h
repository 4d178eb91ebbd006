/* UTF-8 text transforms used by services: Unicode case mapping (one code
 * point to one, like Go's strings.ToUpper) and reversal by characters. Bytes
 * that are not valid UTF-8 pass through unchanged, one byte per character. */
#ifndef TCPKIT_TEXT_H
#define TCPKIT_TEXT_H

#include <stddef.h>
#include <sys/types.h>

/* Upper-cases in[0..n) into out (cap bytes). Returns the length written, or
 * -ENOBUFS if out is too small (4*n bytes always suffice). */
ssize_t tk_utf8_upper(const unsigned char *in, size_t n, unsigned char *out, size_t cap);

/* Lower-cases like tk_utf8_upper. */
ssize_t tk_utf8_lower(const unsigned char *in, size_t n, unsigned char *out, size_t cap);

/* Reverses the characters of in[0..n) into out (n bytes): each UTF-8
 * sequence keeps its byte order. Returns n. */
ssize_t tk_utf8_reverse(const unsigned char *in, size_t n, unsigned char *out);

/* True when s[0..n) is valid UTF-8. */
int tk_utf8_valid(const unsigned char *s, size_t n);

#endif
