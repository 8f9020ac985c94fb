/*
 * error.c - lookups over the ATP_ERRORS table (include/atp/error.h).
 * Knows nothing but the table.
 */
#include "atp/error.h"

#include <stddef.h>
#include <string.h>

struct err_row {
    int code;
    unsigned wire;
    int http;
    const char *name;
    const char *slug;
    const char *msg;
};

static const struct err_row rows[] = {
#define ATP_ERR_ROW(name, code, wire, http, slug, msg) {code, wire, http, #name, slug, msg},
    ATP_ERRORS(ATP_ERR_ROW)
#undef ATP_ERR_ROW
};

static const struct err_row *find_code(int code)
{
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++)
        if (rows[i].code == code)
            return &rows[i];
    return NULL;
}

const char *atp_strerror(int code)
{
    const struct err_row *r = find_code(code);
    if (r)
        return r->msg;
    if (code < 0 && code > -4096)
        return strerror(-code);
    return "unknown error";
}

const char *atp_error_name(int code)
{
    const struct err_row *r = find_code(code);
    if (r)
        return r->name;
    return code < 0 && code > -4096 ? "ESYSTEM" : "EUNKNOWN";
}

const char *atp_error_slug(int code)
{
    const struct err_row *r = find_code(code);
    if (r)
        return r->slug;
    return "system-error";
}

unsigned atp_error_wire(int code)
{
    const struct err_row *r = find_code(code);
    if (r)
        return r->wire;
    return ATP_WIRE_SYSTEM;
}

int atp_error_from_wire(unsigned wire)
{
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++)
        if (rows[i].wire == wire)
            return rows[i].code;
    return ATP_EINTERNAL;
}

int atp_error_http(int code)
{
    const struct err_row *r = find_code(code);
    if (r)
        return r->http;
    return 500;
}
