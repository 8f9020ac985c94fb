/*
 * event_simd.cc - the fast path of event parsing: simdjson's DOM parser.
 *
 * simdjson (Debian's libsimdjson, a packaged parser) validates the whole
 * text, UTF-8 included, and builds its tape in one reusable buffer: no
 * allocation per event. On the benchmark's events it parses and lists the
 * members in ~0.25 us, where json-c took ~1.8 us (bench/bench_ingest.c,
 * docs/BENCHMARKS.md).
 *
 * It decides only the common case: a strict-JSON object within the depth
 * limit. For anything else it answers -1 and event.c asks json-c, whose
 * verdict (and error message) the dead-letter reasons were written against,
 * so a bad event is classified exactly as before. The input is copied into
 * the parser's padded buffer (simdjson reads up to 64 bytes past the end),
 * so it never reads past the caller's bytes.
 *
 * Depth: simdjson's max_depth and json-c's depth limit count alike (with 8,
 * both accept 7 nested levels and refuse 8; tests/test_event.c checks the
 * edge), and a document simdjson finds too deep falls back as well.
 */
#include "event_json.h"

#include <new>

#include <simdjson.h>

struct ev_fast {
    simdjson::dom::parser parser;
    explicit ev_fast(size_t max_bytes) : parser(max_bytes) {}
};

extern "C" struct ev_fast *ev_fast_new(uint32_t max_bytes, uint32_t max_depth)
{
    try {
        ev_fast *f = new ev_fast(max_bytes);
        /* The usual event fits in 4 KiB; the parser grows (up to max_bytes)
         * for a larger one and keeps the room. */
        size_t initial = max_bytes < 4096 ? max_bytes : 4096;
        if (f->parser.allocate(initial, max_depth) != simdjson::SUCCESS) {
            delete f;
            return nullptr;
        }
        return f;
    } catch (...) {
        return nullptr;
    }
}

extern "C" void ev_fast_free(struct ev_fast *f)
{
    delete f;
}

static bool value_of(simdjson::dom::element e, ev_value *v)
{
    using simdjson::dom::element_type;
    switch (e.type()) {
    case element_type::NULL_VALUE:
        v->kind = EVK_NULL;
        return true;
    case element_type::BOOL:
        v->kind = EVK_BOOL;
        return true;
    case element_type::INT64:
        v->kind = EVK_INT;
        v->i = e.get_int64().value_unsafe();
        return true;
    case element_type::UINT64: /* only for values above INT64_MAX */
        v->kind = EVK_BIGINT;
        return true;
    case element_type::DOUBLE:
        v->kind = EVK_DOUBLE;
        return true;
    case element_type::STRING: {
        std::string_view s = e.get_string().value_unsafe();
        v->kind = EVK_STRING;
        v->s = s.data();
        v->len = s.size();
        return true;
    }
    case element_type::ARRAY:
        v->kind = EVK_ARRAY;
        return true;
    case element_type::OBJECT:
        v->kind = EVK_OBJECT;
        return true;
    }
    return false;
}

extern "C" int ev_fast_parse(struct ev_fast *f, const char *buf, size_t len, struct ev_member *out)
{
    try {
        simdjson::dom::element root;
        /* realloc_if_needed: copy into the parser's padded buffer. */
        if (f->parser.parse(buf, len, true).get(root) != simdjson::SUCCESS)
            return -1;
        simdjson::dom::object obj;
        if (root.get_object().get(obj) != simdjson::SUCCESS)
            return -1;
        int n = 0;
        for (simdjson::dom::key_value_pair kv : obj) {
            if (n == EV_FAST_MEMBERS)
                return -1;
            ev_member *m = &out[n++];
            m->name = kv.key.data();
            m->name_len = kv.key.size();
            m->v = ev_value{};
            if (!value_of(kv.value, &m->v))
                return -1;
        }
        return n;
    } catch (...) {
        return -1;
    }
}
