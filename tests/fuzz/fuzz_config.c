/*
 * fuzz_config.c - configuration text (src/config.h): atp_config_load_text,
 * atp_config_load_env, atp_config_parse_duration_ms, atp_config_parse_size.
 *
 * The input is a config file. It is loaded over the defaults; when it
 * loads, the result is validated, turned into a store config, and dumped,
 * and config.h's promise is checked: the dump loads back to the same config
 * (the same kafka properties, and dumped again, the same text). Every line
 * is also given, NUL-terminated, to the duration and size parsers, and the
 * lines together are an environment for atp_config_load_env.
 */
#include <string.h>

#include "config.h"
#include "fuzz.h"

/* The dump of cfg as a heap string (*ret_len bytes), or NULL. */
static char *dump(const struct atp_config *cfg, size_t *ret_len)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f)
        return NULL;
    atp_config_dump(cfg, f);
    if (fclose(f) != 0) {
        free(text);
        return NULL;
    }
    *ret_len = len;
    return text;
}

static void check_err(const char *err, size_t errlen)
{
    FUZZ_CHECK(memchr(err, '\0', errlen) != NULL);
    FUZZ_CHECK(err[0] != '\0');
}

static void round_trip(const struct atp_config *cfg)
{
    size_t len1 = 0, len2 = 0;
    char *text1 = dump(cfg, &len1);
    if (!text1)
        return;
    struct atp_config again;
    atp_config_init(&again);
    char err[256];
    int rc = atp_config_load_text(&again, text1, len1, "dump", err, sizeof(err));
    if (rc != 0)
        fprintf(stderr, "the dump does not load back: %s\n", err);
    FUZZ_CHECK(rc == 0);
    /* The dump writes kafka.<property> lines last: what it names must be
     * what was set (the text comparison below cannot see a name the dump
     * shortened consistently). */
    FUZZ_CHECK(again.nkafka_props == cfg->nkafka_props);
    for (uint32_t i = 0; i < cfg->nkafka_props; i++) {
        FUZZ_CHECK(strcmp(again.kafka_props[i].key, cfg->kafka_props[i].key) == 0);
        FUZZ_CHECK(strcmp(again.kafka_props[i].value, cfg->kafka_props[i].value) == 0);
    }
    char *text2 = dump(&again, &len2);
    if (text2) {
        FUZZ_CHECK(len1 == len2 && memcmp(text1, text2, len1) == 0);
        free(text2);
    }
    atp_config_free(&again);
    free(text1);
}

/* Each line, NUL-terminated, to the value parsers; lines as an environment. */
static void lines(const uint8_t *data, size_t size)
{
    char *copy = malloc(size + 1);
    if (!copy)
        return;
    memcpy(copy, data, size);
    copy[size] = '\0';
    char *envp[65];
    size_t nenv = 0;
    char *save = NULL;
    for (char *line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        uint64_t v;
        (void)atp_config_parse_duration_ms(line, 0, &v);
        (void)atp_config_parse_duration_ms(line, 1000, &v);
        (void)atp_config_parse_size(line, &v);
        if (nenv < 64)
            envp[nenv++] = line;
    }
    envp[nenv] = NULL;
    struct atp_config cfg;
    atp_config_init(&cfg);
    char err[128];
    if (atp_config_load_env(&cfg, envp, err, sizeof(err)) != 0)
        check_err(err, sizeof(err));
    atp_config_free(&cfg);
    free(copy);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct atp_config cfg;
    atp_config_init(&cfg);
    char err[256];
    int rc = atp_config_load_text(&cfg, (const char *)data, size, "fuzz.conf", err, sizeof(err));
    if (rc == 0) {
        struct atp_config_store sc;
        if (atp_config_validate(&cfg, err, sizeof(err)) != 0)
            check_err(err, sizeof(err));
        atp_config_to_store(&cfg, &sc);
        round_trip(&cfg);
    } else {
        check_err(err, sizeof(err));
    }
    atp_config_free(&cfg);
    lines(data, size);
    return 0;
}
