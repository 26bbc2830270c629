/* Time helpers.  Monotonic milliseconds drive every deadline and timer;
 * wall-clock time is used only for SigV4 dates, log stamps and output. */
#ifndef KK_CLOCK_H
#define KK_CLOCK_H

#include <stdint.h>
#include <time.h>

/* Monotonic milliseconds (uv_hrtime based); never goes back. */
uint64_t kk_mono_ms(void);

/* Wall clock, milliseconds since the Unix epoch. */
int64_t kk_wall_ms(void);

/* Formats epoch milliseconds as RFC 3339 UTC with the fractional part
 * trimmed as Go's time.Time MarshalJSON does ("2021-02-10T12:34:56.789Z",
 * "2021-02-10T12:34:56Z", "…56.78Z").  dst needs 32 bytes; returns length. */
int kk_fmt_rfc3339_ms(char dst[32], int64_t epoch_ms);

/* Parses RFC 3339 ("2024-01-02T03:04:05Z", optional fraction, Z or ±hh:mm)
 * into epoch nanoseconds.  Returns 0 or KK_EINVAL. */
int kk_parse_rfc3339(const char *s, int64_t *epoch_ns);

#endif
