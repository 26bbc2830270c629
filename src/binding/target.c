/* kk_target_create: the one place that names concrete target kinds.  Kept
 * apart from binding.c so the state machine links without the Kinesis code. */
#include "kk/target.h"

#include <stdio.h>

#include "kk/err.h"

int kk_target_create(uv_loop_t *loop, const struct kk_spec *spec, const char *binding, struct kk_target **out,
                     char *err, size_t errlen)
{
    switch (spec->kind) {
    case KK_TARGET_KINESIS:
        return kk_kinesis_target_create(loop, spec, binding, out, err, errlen);
    case KK_TARGET_NULL:
        return kk_null_target_create(loop, spec, binding, out, err, errlen);
    default:
        snprintf(err, errlen, "unknown target kind %s", spec->kind_text ? spec->kind_text : "");
        return KK_ECONFIG;
    }
}
