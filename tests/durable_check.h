/*
 * durable_check.h - test helpers for the durability tests: a canonical text
 * dump of a store (every item, override and reservation, sorted) so that
 * "the recovered store equals the original" is one string comparison whose
 * failure shows the first difference; temporary folders; file copies.
 *
 * Header-only (static functions) so each test stays one executable.
 */
#ifndef ATP_TEST_DURABLE_CHECK_H
#define ATP_TEST_DURABLE_CHECK_H

#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "atp/durable.h"
#include "atp/store.h"

struct dump {
    char **lines;
    size_t n, cap;
};

static inline void dump_add(struct dump *d, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static inline void dump_add(struct dump *d, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *s = NULL;
    if (vasprintf(&s, fmt, ap) < 0)
        abort();
    va_end(ap);
    if (d->n == d->cap) {
        d->cap = d->cap ? d->cap * 2 : 256;
        d->lines = realloc(d->lines, d->cap * sizeof(char *));
        if (!d->lines)
            abort();
    }
    d->lines[d->n++] = s;
}

static inline int dump_item(const struct atp_item_view *it, void *arg)
{
    dump_add(arg,
             "item %.*s@%.*s on_hand=%" PRId64 " allocated=%" PRId64 " reserved=%" PRId64
             " seq=%" PRIu64,
             (int)it->sku.len, it->sku.p, (int)it->loc.len, it->loc.p, it->on_hand, it->allocated,
             it->reserved, it->set_seq);
    return 0;
}

static inline int dump_override(struct atp_slice sku, struct atp_slice loc, uint32_t ch,
                                int64_t units, void *arg)
{
    dump_add(arg, "override %.*s@%.*s ch=%u units=%" PRId64, (int)sku.len, sku.p, (int)loc.len,
             loc.p, ch, units);
    return 0;
}

static inline int dump_res(const struct atp_reservation *r, void *arg)
{
    char lines[4096];
    size_t o = 0;
    for (uint32_t i = 0; i < r->nlines && o < sizeof(lines) - 200; i++)
        o += (size_t)snprintf(lines + o, sizeof(lines) - o, " [%.*s@%.*s x%" PRId64 "%s%s]",
                              (int)r->lines[i].sku.len, r->lines[i].sku.p, (int)r->lines[i].loc.len,
                              r->lines[i].loc.p, r->lines[i].qty, r->lines[i].fulfilled ? " F" : "",
                              r->lines[i].any ? " any" : "");
    lines[o] = 0;
    dump_add(arg,
             "resv %016" PRIx64 " %s ch=%u created=%" PRIu64 " expires=%" PRIu64 " ttl=%" PRIu64
             " key=%.*s%s",
             r->id, atp_res_state_name(r->state), r->channel, r->created_us, r->expires_us,
             r->ttl_ms, (int)r->key_len, r->key, lines);
    return 0;
}

static inline int dump_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Canonical dump of everything a snapshot and the log must preserve. */
static inline char *store_dump(struct atp_store *s)
{
    struct dump d = {0};
    atp_store_foreach_item(s, dump_item, &d);
    atp_store_foreach_override(s, dump_override, &d);
    atp_store_foreach_reservation(s, dump_res, &d);
    if (d.n > 1) /* an empty store has no lines, and qsort no NULL */
        qsort(d.lines, d.n, sizeof(char *), dump_cmp);
    size_t len = 1;
    for (size_t i = 0; i < d.n; i++)
        len += strlen(d.lines[i]) + 1;
    char *out = malloc(len), *p = out;
    if (!out)
        abort();
    for (size_t i = 0; i < d.n; i++) {
        size_t l = strlen(d.lines[i]);
        memcpy(p, d.lines[i], l);
        p[l] = '\n';
        p += l + 1;
        free(d.lines[i]);
    }
    *p = 0;
    free(d.lines);
    return out;
}

/* Print the first differing line of two dumps (for a failing comparison). */
static inline void dump_diff(const char *a, const char *b)
{
    size_t line = 1;
    const char *la = a, *lb = b;
    while (*a && *a == *b) {
        if (*a == '\n') {
            line++;
            la = a + 1;
            lb = b + 1;
        }
        a++;
        b++;
    }
    if (!*a && !*b)
        return;
    fprintf(stderr, "dumps differ at line %zu:\n  want: %.*s\n  got:  %.*s\n", line,
            (int)strcspn(la, "\n"), la, (int)strcspn(lb, "\n"), lb);
}

static inline void rm_rf(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        char *path;
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..") ||
            asprintf(&path, "%s/%s", dir, de->d_name) < 0)
            continue;
        if (de->d_type == DT_DIR)
            rm_rf(path);
        else
            unlink(path);
        free(path);
    }
    closedir(d);
    rmdir(dir);
}

/* A fresh temporary folder (caller frees the string, rm_rf's the folder). */
static inline char *tmp_dir(const char *tag)
{
    const char *base = getenv("TMPDIR");
    char *p = NULL;
    if (asprintf(&p, "%s/atp-%s-XXXXXX", base ? base : "/tmp", tag) < 0 || !mkdtemp(p))
        abort();
    return p;
}

/* Copy file src to dst, keeping at most `limit` bytes (SIZE_MAX: all). */
static inline int copy_file(const char *src, const char *dst, size_t limit)
{
    int in = open(src, O_RDONLY), out = open(dst, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (in < 0 || out < 0)
        return -1;
    char buf[65536];
    size_t done = 0;
    ssize_t n;
    while (done < limit && (n = read(in, buf, sizeof(buf))) > 0) {
        size_t k = (size_t)n;
        if (k > limit - done)
            k = limit - done;
        if (write(out, buf, k) != (ssize_t)k)
            return -1;
        done += k;
    }
    close(in);
    close(out);
    return 0;
}

/* Copy every regular file of folder src into folder dst (created). */
static inline int copy_dir(const char *src, const char *dst)
{
    mkdir(dst, 0755);
    DIR *d = opendir(src);
    if (!d)
        return -1;
    struct dirent *de;
    int rc = 0;
    while (!rc && (de = readdir(d)) != NULL) {
        char *a, *b;
        if (de->d_name[0] == '.' || !strcmp(de->d_name, "LOCK"))
            continue;
        if (asprintf(&a, "%s/%s", src, de->d_name) < 0)
            return -1;
        if (asprintf(&b, "%s/%s", dst, de->d_name) < 0)
            return -1;
        rc = copy_file(a, b, SIZE_MAX);
        free(a);
        free(b);
    }
    closedir(d);
    return rc;
}

static inline size_t file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) ? 0 : (size_t)st.st_size;
}

#endif /* ATP_TEST_DURABLE_CHECK_H */
