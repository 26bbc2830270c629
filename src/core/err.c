#include "kk/err.h"

#include <uv.h>

static const char *const messages[] = {
#define XX(name, msg) msg,
    KK_ERR_MAP(XX)
#undef XX
};

static const char *const names[] = {
#define XX(name, msg) "KK_E" #name,
    KK_ERR_MAP(XX)
#undef XX
};

const char *kk_strerror(int code)
{
    if (code == 0)
        return "success";
    if (code > KK__ERR_FIRST && code < KK__ERR_LAST)
        return messages[code - KK__ERR_FIRST - 1];
    if (code < 0 && code > KK_ERR_BASE)
        return uv_strerror(code);
    return "unknown error";
}

const char *kk_errname(int code)
{
    if (code == 0)
        return "OK";
    if (code > KK__ERR_FIRST && code < KK__ERR_LAST)
        return names[code - KK__ERR_FIRST - 1];
    if (code < 0 && code > KK_ERR_BASE)
        return uv_err_name(code);
    return "UNKNOWN";
}
