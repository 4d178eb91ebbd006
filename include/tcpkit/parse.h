/* Parsing of the value forms every tcpkit setting uses: integers, byte sizes
 * and durations. Shared by the command line and configuration files. */
#ifndef TCPKIT_PARSE_H
#define TCPKIT_PARSE_H

#include <stddef.h>
#include <stdint.h>

/* A decimal integer in [min, max] into *out; 0 or -EINVAL. */
int tk_parse_uint(const char *s, unsigned long min, unsigned long max, unsigned long *out);

/* "65536", "64K", "1M", "2G" (binary multiples; K, KB and KiB alike) into
 * *out; 0 or -EINVAL. */
int tk_parse_size(const char *s, size_t *out);

/* Seconds with an optional fraction ("0.5", "300") or a unit ("500ms",
 * "30s", "5m") into milliseconds: decimal digits with at most one '.',
 * nothing else (no sign, exponent or hexadecimal). A positive value never
 * rounds to 0. 0 or -EINVAL. */
int tk_parse_duration_ms(const char *s, uint32_t *out);

#endif
