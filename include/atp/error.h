/*
 * atp/error.h - the one table of atpd status codes.
 *
 * One int carries both worlds: 0 is success, -1..-4095 are -errno values
 * (io_uring and the C library already report that way), and atpd's domain
 * codes sit far below, from -10001 down. The X-macro ATP_ERRORS generates the
 * enum, atp_strerror(), the binary protocol's status numbers and the HTTP
 * problem types, so they cannot drift apart.
 *
 * Columns: X(NAME, code, wire status, HTTP status, problem slug, message)
 *   NAME      ATP_<NAME> is the C constant (ATP_OK is 0).
 *   code      the negative int returned by library calls.
 *   wire      the u16 status carried in binary protocol responses.
 *   HTTP      the HTTP status of the problem+json answer.
 *   slug      the problem type: https://atpd.dev/problems/<slug>, and the
 *             `code` member of the problem is the NAME in lower case.
 *   message   the stable human message.
 *
 * Wire status numbers are part of the protocol contract (protocol/PROTOCOL.md)
 * and never change meaning once published.
 */
#ifndef ATP_ERROR_H
#define ATP_ERROR_H

#ifdef __cplusplus
extern "C" {
#endif

/* clang-format off */
#define ATP_ERRORS(X)                                                                             \
    X(OK,            0,      0,   200, "ok",                   "ok")                              \
    X(EINVAL_SKU,    -10001, 100, 400, "invalid-sku",          "invalid sku: 1..64 bytes of [A-Za-z0-9._:/-]") \
    X(EINVAL_LOC,    -10002, 101, 400, "invalid-location",     "invalid location: 1..32 bytes of [A-Za-z0-9._:/-]") \
    X(ENOCHANNEL,    -10003, 102, 400, "unknown-channel",      "unknown channel")                 \
    X(EQTY,          -10004, 103, 400, "invalid-quantity",     "quantity must be greater than zero") \
    X(ERANGE,        -10005, 104, 400, "quantity-out-of-range","quantity out of the supported range") \
    X(ETTL,          -10006, 105, 400, "invalid-ttl",          "ttl must be between 1 ms and the configured maximum") \
    X(EKEY,          -10007, 106, 400, "invalid-idempotency-key", "invalid idempotency key: 1..64 printable ASCII bytes") \
    X(ETOOMANY,      -10008, 107, 400, "too-many-lines",       "too many lines or keys in one request") \
    X(EINVAL,        -10009, 108, 400, "invalid-argument",     "invalid argument")                \
    X(ENOTFOUND,     -10010, 200, 404, "not-found",            "not found")                       \
    X(EINSUFFICIENT, -10011, 300, 409, "insufficient-stock",   "insufficient stock")              \
    X(ESTATE,        -10012, 301, 409, "invalid-state",        "reservation is not in a state that allows this") \
    X(EEXPIRED,      -10013, 302, 409, "reservation-expired",  "reservation expired")             \
    X(ECONFLICT,     -10014, 303, 422, "idempotency-conflict", "idempotency key reused with different content") \
    X(ESTALE,        -10015, 304, 409, "stale-sequence",       "set is older than the last applied one for this item") \
    X(EDUPLICATE,    -10016, 305, 409, "duplicate-event",      "event already applied")           \
    X(EBUSY,         -10020, 306, 409, "request-in-progress",  "a request with this idempotency key is in progress") \
    X(ECURSOR,       -10021, 307, 410, "cursor-expired",       "change feed cursor expired or not from this instance: read again and follow a new cursor") \
    X(EFULL,         -10017, 400, 507, "capacity-exhausted",   "configured capacity exhausted")   \
    X(EUNAVAILABLE,  -10018, 401, 503, "unavailable",          "temporarily unavailable")         \
    X(EREADONLY,     -10019, 402, 503, "read-only",            "reservations are refused: durable storage failed") \
    X(EBADMAGIC,     -10101, 500, 400, "bad-magic",            "bad frame magic")                 \
    X(EVERSION,      -10102, 501, 400, "unsupported-version",  "unsupported protocol version")    \
    X(EUNKNOWNOP,    -10103, 502, 400, "unknown-operation",    "unknown operation")               \
    X(EMALFORMED,    -10104, 503, 400, "malformed-request",    "malformed request body")          \
    X(ETOOLARGE,     -10105, 504, 413, "frame-too-large",      "frame or body larger than the limit") \
    X(ETIMEDOUT,     -10106, 505, 408, "request-timeout",      "client too slow or idle too long") \
    X(ETOOMANYCONN,  -10107, 506, 503, "too-many-connections", "connection limit reached")        \
    X(EMETHOD,       -10108, 507, 405, "method-not-allowed",   "method not allowed for this resource") \
    X(EMEDIATYPE,    -10109, 508, 415, "unsupported-media-type", "unsupported media type: send application/json") \
    X(EHEADERS,      -10110, 509, 431, "headers-too-large",    "request line and header fields larger than the limit") \
    X(EINTERNAL,     -10199, 900, 500, "internal-error",       "internal error")
/* clang-format on */

enum atp_error {
#define ATP_ERR_ENUM(name, code, wire, http, slug, msg) ATP_##name = (code),
    ATP_ERRORS(ATP_ERR_ENUM)
#undef ATP_ERR_ENUM
};

/* Wire status for a system error (-errno) that reaches a client. */
#define ATP_WIRE_SYSTEM 901

/*
 * Human message for any return code: domain codes from the table, -errno
 * through strerror. Never NULL; the string is static.
 */
const char *atp_strerror(int code);

/* Upper-case constant name without the ATP_ prefix ("EINSUFFICIENT"). */
const char *atp_error_name(int code);

/* Problem slug ("insufficient-stock"); "system-error" for -errno codes. */
const char *atp_error_slug(int code);

/* Binary protocol status for a return code (0 for success). */
unsigned atp_error_wire(int code);

/* Return code for a wire status; ATP_EINTERNAL for an unknown status. */
int atp_error_from_wire(unsigned wire);

/* HTTP status for a return code. */
int atp_error_http(int code);

#ifdef __cplusplus
}
#endif

#endif /* ATP_ERROR_H */
