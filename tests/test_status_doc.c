/*
 * test_status_doc.c - the status table in protocol/PROTOCOL.md lists exactly
 * the rows of ATP_ERRORS (include/atp/error.h), with the same wire numbers
 * and names, so the contract cannot drift from the code. (suite unit)
 * Usage: test_status_doc PATH/TO/PROTOCOL.md
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "atp/error.h"

struct row {
    unsigned wire;
    const char *name;
    int seen;
};

static struct row rows[] = {
#define ATP_ERR_DOC(name, code, wire, http, slug, msg) {wire, #name, 0},
    ATP_ERRORS(ATP_ERR_DOC)
#undef ATP_ERR_DOC
};

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s PROTOCOL.md\n", argv[0]);
        return 2;
    }
    FILE *f = fopen(argv[1], "r");
    if (!f) {
        perror(argv[1]);
        return 1;
    }
    char line[512];
    int failures = 0, lineno = 0;
    size_t n = sizeof(rows) / sizeof(rows[0]);
    while (fgets(line, sizeof(line), f)) {
        lineno++;
        unsigned wire;
        char name[64];
        /* Table rows look like "| 300 | EINSUFFICIENT | ... |". */
        if (sscanf(line, "| %u | %63[A-Z_] |", &wire, name) != 2)
            continue;
        size_t i = 0;
        while (i < n && strcmp(rows[i].name, name) != 0)
            i++;
        if (i == n) {
            fprintf(stderr, "PROTOCOL.md:%d: %s is not in ATP_ERRORS\n", lineno, name);
            failures++;
        } else if (rows[i].wire != wire) {
            fprintf(stderr, "PROTOCOL.md:%d: %s is %u there, %u in error.h\n", lineno, name, wire,
                    rows[i].wire);
            failures++;
        } else {
            rows[i].seen = 1;
        }
    }
    fclose(f);
    for (size_t i = 0; i < n; i++) {
        if (!rows[i].seen) {
            fprintf(stderr, "%s (wire %u) is missing from PROTOCOL.md's status table\n",
                    rows[i].name, rows[i].wire);
            failures++;
        }
    }
    if (failures)
        return 1;
    printf("%zu statuses, PROTOCOL.md and error.h agree\n", n);
    return 0;
}
