/* Prometheus text exposition helpers.
 *
 * Label values are escaped as the text format requires: backslash, double
 * quote and line feed become \\, \" and \n; every other byte is copied.  One
 * helper, so every module that prints a label (api, sources, targets) agrees.
 */
#ifndef KK_PROM_H
#define KK_PROM_H

#include "kk/buf.h"

/* Appends value (NULL = "") escaped for use between the quotes of a label
 * value.  Returns 0, or the kk_buf error (KK_ETOOBIG / KK_ENOMEM) with out
 * possibly holding part of the value. */
int kk_prom_label(struct kk_buf *out, const char *value);

#endif
