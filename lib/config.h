/*
 * config.h - configuration helpers beyond the public ferry_config_* functions.
 *
 * config.c keeps every FERRY_* variable in one table (name, field, kind, limits); the
 * environment parser, ferryi_config_check() and ferryi_config_describe() all read
 * that table, so the documentation a tool prints cannot drift from what is parsed.
 */
#ifndef FERRY_LIB_CONFIG_H
#define FERRY_LIB_CONFIG_H

#include "ferry/ferry.h"

#include <stdio.h>

/*
 * Prints one line per environment variable, in table order:
 *     FERRY_NAME=value  # default D
 * where value is cfg's (NULL = the defaults) in a form ferry_config_from_env() accepts
 * back, and D is the default from ferry_config_init(). Byte sizes use the largest exact
 * K/M/G/T suffix; an unset string prints as empty, its default as "(unset)".
 * Returns 0, or FERRY_EIO if writing to out failed. Any thread.
 */
int ferryi_config_describe(const struct ferry_config *cfg, FILE *out);

#endif /* FERRY_LIB_CONFIG_H */
