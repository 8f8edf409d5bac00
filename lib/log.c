/*
 * log.c - leveled logging to stderr.
 *
 * Each line is formatted in a stack buffer and written with a single write(2), so lines
 * from several threads (or processes sharing stderr) never interleave mid-line and
 * logging never allocates. Filtering happens in the FERRYI_LOG macro before the
 * arguments are evaluated; ferryi_log() itself prints what it is given.
 *
 * Without a context the level comes from FERRY_LOG, read once per process; with one it
 * is the context's configured level (which already includes FERRY_LOG).
 */
#include "core.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

/* Defined in context.c: the level of a live context. */
extern enum ferry_log_level ferryi_ctx_log_level(const struct ferry_ctx *ctx);

/* Long enough for any sane message; longer ones end in "...". */
#define LOG_LINE_MAX 1024

static const char *const log_names[] = {
	[FERRY_LOG_OFF] = "off",     [FERRY_LOG_ERROR] = "error", [FERRY_LOG_WARN] = "warn",
	[FERRY_LOG_INFO] = "info",   [FERRY_LOG_DEBUG] = "debug", [FERRY_LOG_TRACE] = "trace",
};

static const char *const log_tags[] = {
	[FERRY_LOG_OFF] = "OFF",   [FERRY_LOG_ERROR] = "ERROR", [FERRY_LOG_WARN] = "WARN",
	[FERRY_LOG_INFO] = "INFO", [FERRY_LOG_DEBUG] = "DEBUG", [FERRY_LOG_TRACE] = "TRACE",
};

static pthread_once_t log_once = PTHREAD_ONCE_INIT;
static enum ferry_log_level log_global = FERRY_LOG_WARN;

int ferryi_log_parse(const char *s, enum ferry_log_level *out)
{
	if (!s || !out)
		return FERRY_EINVAL;
	if (s[0] >= '0' && s[0] <= '0' + FERRY_LOG_TRACE && s[1] == '\0') {
		*out = (enum ferry_log_level)(s[0] - '0');
		return 0;
	}
	for (size_t i = 0; i < FERRYI_ARRAY_LEN(log_names); i++) {
		if (strcasecmp(s, log_names[i]) == 0) {
			*out = (enum ferry_log_level)i;
			return 0;
		}
	}
	/* The spelling most people try first. */
	if (strcasecmp(s, "warning") == 0) {
		*out = FERRY_LOG_WARN;
		return 0;
	}
	return FERRY_EINVAL;
}

static void log_write(const char *line, size_t len)
{
	while (len > 0) {
		ssize_t n = write(STDERR_FILENO, line, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return; /* nowhere left to report it */
		}
		line += n;
		len -= (size_t)n;
	}
}

static void log_vemit(enum ferry_log_level lvl, const char *fmt, va_list ap)
{
	char line[LOG_LINE_MAX];
	static const char trunc[] = "...\n";
	size_t cap = sizeof(line) - 1; /* room for the final '\n' */
	int n = snprintf(line, cap + 1, "ferry[%ld] %s ", (long)getpid(), log_tags[lvl]);
	size_t len = (n > 0) ? (size_t)n : 0;

	if (len < cap) {
		int m = vsnprintf(line + len, cap + 1 - len, fmt, ap);
		if (m > 0)
			len += (size_t)m;
	}
	if (len > cap) {
		memcpy(line + sizeof(line) - sizeof(trunc), trunc, sizeof(trunc) - 1);
		len = sizeof(line) - 1;
	} else {
		/* A message that brings its own newline does not get a blank line. */
		if (len == 0 || line[len - 1] != '\n')
			line[len++] = '\n';
	}
	log_write(line, len);
}

static void log_emit(enum ferry_log_level lvl, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static void log_emit(enum ferry_log_level lvl, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	log_vemit(lvl, fmt, ap);
	va_end(ap);
}

static void log_init_once(void)
{
	const char *env = getenv("FERRY_LOG");
	enum ferry_log_level lvl;

	if (!env || !*env)
		return;
	if (ferryi_log_parse(env, &lvl) == 0) {
		log_global = lvl;
		return;
	}
	/* Not through FERRYI_LOG: this runs inside the level's own initialisation. */
	log_emit(FERRY_LOG_WARN,
		 "FERRY_LOG='%.64s' is not off|error|warn|info|debug|trace|0-5; using warn",
		 env);
}

enum ferry_log_level ferryi_log_level(const struct ferry_ctx *ctx)
{
	if (ctx)
		return ferryi_ctx_log_level(ctx);
	pthread_once(&log_once, log_init_once);
	return log_global;
}

void ferryi_log(const struct ferry_ctx *ctx, enum ferry_log_level lvl, const char *fmt, ...)
{
	(void)ctx; /* the line format does not name the context */
	if (lvl <= FERRY_LOG_OFF || lvl > FERRY_LOG_TRACE)
		return;

	int saved = errno; /* callers log and then report errno */
	va_list ap;
	va_start(ap, fmt);
	log_vemit(lvl, fmt, ap);
	va_end(ap);
	errno = saved;
}
