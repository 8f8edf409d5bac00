/*
 * test_config.c - ferry_config_init/_from_env, ferryi_config_check,
 * ferryi_config_describe, and the log line format the config warnings use.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "config.h"
#include "core.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/*
 * Written out independently of config.c's table on purpose: describe() must list
 * exactly these, so a variable added to one place and not the other fails here.
 */
static const char *const all_vars[] = {
	"FERRY_LOG",
	"FERRY_FALLBACK",
	"FERRY_PROVIDERS",
	"FERRY_CONNECT_TIMEOUT_MS",
	"FERRY_HANDSHAKE_TIMEOUT_MS",
	"FERRY_IDLE_TIMEOUT",
	"FERRY_PROBE_INTERVAL_MS",
	"FERRY_PROBE_MISSES",
	"FERRY_PROBE_IDLE_INTERVAL_MS",
	"FERRY_RECONNECT_INITIAL_MS",
	"FERRY_RECONNECT_MAX_MS",
	"FERRY_RECONNECT_MULTIPLIER",
	"FERRY_RECONNECT_JITTER",
	"FERRY_RECONNECT_ATTEMPTS",
	"FERRY_POOL_MAX",
	"FERRY_LISTEN_BACKLOG",
	"FERRY_MAX_ENDPOINTS",
	"FERRY_EAGER_MAX",
	"FERRY_MAX_FRAME",
	"FERRY_UNEXPECTED_MAX",
	"FERRY_COMPRESS",
	"FERRY_COMPRESS_LEVEL",
	"FERRY_COMPRESS_MIN",
	"FERRY_PROGRESS_THREAD",
	"FERRY_CQ_SIZE",
	"FERRY_ZEROCOPY_MIN",    /* no struct field yet: lib/config.h ferryi_config_ext */
	"FERRY_COMPRESS_ACCEPT",
	"FERRY_REG_CACHE_BYTES",
	"FERRY_REG_CACHE_ENTRIES",
	"FERRY_TCP_CONGESTION",
	"FERRY_TCP_RMA_WINDOW",
};
#define NVARS (sizeof(all_vars) / sizeof(all_vars[0]))

static int clear_env(void **state)
{
	(void)state;
	for (size_t i = 0; i < NVARS; i++)
		unsetenv(all_vars[i]);
	return 0;
}

/* ------------------------------------------------------------------ stderr capture */

struct capture {
	int saved;
	FILE *f;
};

static void capture_begin(struct capture *c)
{
	c->f = tmpfile();
	assert_non_null(c->f);
	c->saved = dup(STDERR_FILENO);
	assert_true(c->saved >= 0);
	assert_true(dup2(fileno(c->f), STDERR_FILENO) >= 0);
}

/* Returns what was written to stderr meanwhile (static buffer). */
static const char *capture_end(struct capture *c)
{
	static char buf[16384];
	size_t n;

	assert_true(dup2(c->saved, STDERR_FILENO) >= 0);
	close(c->saved);
	rewind(c->f);
	n = fread(buf, 1, sizeof(buf) - 1, c->f);
	buf[n] = '\0';
	fclose(c->f);
	return buf;
}

/* ------------------------------------------------------------------ defaults */

static void test_defaults(void **state)
{
	struct ferry_config c;
	(void)state;

	memset(&c, 0xa5, sizeof(c));
	ferry_config_init(&c);
	assert_int_equal(c.log_level, FERRY_LOG_WARN);
	assert_int_equal(c.fallback, FERRY_FALLBACK_PREFER);
	assert_null(c.providers);
	assert_int_equal(c.connect_timeout_ms, 10000);
	assert_int_equal(c.handshake_timeout_ms, 5000);
	assert_int_equal(c.idle_timeout_s, 30);
	assert_int_equal(c.probe_interval_ms, 1000);
	assert_int_equal(c.probe_misses, 3);
	assert_int_equal(c.probe_idle_interval_ms, 30000);
	assert_int_equal(c.reconnect_initial_ms, 1000);
	assert_int_equal(c.reconnect_max_ms, 30000);
	assert_true(c.reconnect_multiplier == 2.0);
	assert_true(c.reconnect_jitter == 0.2);
	assert_int_equal(c.reconnect_attempts, 5);
	assert_int_equal(c.pool_max, 1024);
	assert_int_equal(c.listen_backlog, 1024);
	assert_int_equal(c.max_endpoints, 65536);
	assert_int_equal(c.eager_max, 65536);
	assert_true(c.max_frame == (UINT64_C(1) << 40));
	assert_true(c.unexpected_max == (UINT64_C(64) << 20));
	assert_int_equal(c.compress, FERRY_COMPRESS_OFF);
	assert_int_equal(c.compress_level, 1);
	assert_int_equal(c.compress_min, 16384);
	assert_int_equal(c.progress_thread, 0);
	assert_int_equal(c.cq_size, 65536);
	assert_null(c.event_fn);
	assert_null(c.event_arg);
	assert_int_equal(ferryi_config_check(&c), 0);
	ferry_config_init(NULL); /* must not crash */
}

static void test_env_unset_changes_nothing(void **state)
{
	struct ferry_config a, b;
	(void)state;

	ferry_config_init(&a);
	ferry_config_init(&b);
	assert_int_equal(ferry_config_from_env(&a), 0);
	assert_memory_equal(&a, &b, sizeof(a));
	/* An empty value counts as unset ("FERRY_LOG= cmd"). */
	setenv("FERRY_LOG", "", 1);
	setenv("FERRY_CQ_SIZE", "", 1);
	setenv("FERRY_PROVIDERS", "", 1);
	assert_int_equal(ferry_config_from_env(&a), 0);
	assert_memory_equal(&a, &b, sizeof(a));
	assert_int_equal(ferry_config_from_env(NULL), FERRY_EINVAL);
}

/* ------------------------------------------------------------------ every variable */

static void test_env_every_variable(void **state)
{
	struct ferry_config c;
	(void)state;

	setenv("FERRY_LOG", "debug", 1);
	setenv("FERRY_FALLBACK", "require", 1);
	setenv("FERRY_PROVIDERS", "tcp,verbs", 1);
	setenv("FERRY_CONNECT_TIMEOUT_MS", "1234", 1);
	setenv("FERRY_HANDSHAKE_TIMEOUT_MS", "567", 1);
	setenv("FERRY_IDLE_TIMEOUT", "0", 1);
	setenv("FERRY_PROBE_INTERVAL_MS", "250", 1);
	setenv("FERRY_PROBE_MISSES", "7", 1);
	setenv("FERRY_PROBE_IDLE_INTERVAL_MS", "45000", 1);
	setenv("FERRY_RECONNECT_INITIAL_MS", "10", 1);
	setenv("FERRY_RECONNECT_MAX_MS", "900", 1);
	setenv("FERRY_RECONNECT_MULTIPLIER", "1.5", 1);
	setenv("FERRY_RECONNECT_JITTER", "0.05", 1);
	setenv("FERRY_RECONNECT_ATTEMPTS", "0", 1);
	setenv("FERRY_POOL_MAX", "16", 1);
	setenv("FERRY_LISTEN_BACKLOG", "128", 1);
	setenv("FERRY_MAX_ENDPOINTS", "100", 1);
	setenv("FERRY_EAGER_MAX", "8k", 1);
	setenv("FERRY_MAX_FRAME", "2G", 1);
	setenv("FERRY_UNEXPECTED_MAX", "3m", 1);
	setenv("FERRY_COMPRESS", "auto", 1);
	setenv("FERRY_COMPRESS_LEVEL", "-3", 1);
	setenv("FERRY_COMPRESS_MIN", "4096", 1);
	setenv("FERRY_PROGRESS_THREAD", "1", 1);
	setenv("FERRY_CQ_SIZE", "1024", 1);

	ferry_config_init(&c);
	assert_int_equal(ferry_config_from_env(&c), 0);
	assert_int_equal(c.log_level, FERRY_LOG_DEBUG);
	assert_int_equal(c.fallback, FERRY_FALLBACK_REQUIRE);
	assert_non_null(c.providers);
	assert_string_equal(c.providers, "tcp,verbs");
	assert_ptr_equal(c.providers, getenv("FERRY_PROVIDERS"));
	assert_int_equal(c.connect_timeout_ms, 1234);
	assert_int_equal(c.handshake_timeout_ms, 567);
	assert_int_equal(c.idle_timeout_s, 0);
	assert_int_equal(c.probe_interval_ms, 250);
	assert_int_equal(c.probe_misses, 7);
	assert_int_equal(c.probe_idle_interval_ms, 45000);
	assert_int_equal(c.reconnect_initial_ms, 10);
	assert_int_equal(c.reconnect_max_ms, 900);
	assert_true(c.reconnect_multiplier == 1.5);
	assert_true(c.reconnect_jitter == 0.05);
	assert_int_equal(c.reconnect_attempts, 0);
	assert_int_equal(c.pool_max, 16);
	assert_int_equal(c.listen_backlog, 128);
	assert_int_equal(c.max_endpoints, 100);
	assert_int_equal(c.eager_max, 8192);
	assert_true(c.max_frame == (UINT64_C(2) << 30));
	assert_int_equal(c.unexpected_max, 3 << 20);
	assert_int_equal(c.compress, FERRY_COMPRESS_AUTO);
	assert_int_equal(c.compress_level, -3);
	assert_int_equal(c.compress_min, 4096);
	assert_int_equal(c.progress_thread, 1);
	assert_int_equal(c.cq_size, 1024);
	assert_int_equal(ferryi_config_check(&c), 0);
}

static void test_env_keeps_non_env_fields(void **state)
{
	struct ferry_config c;
	int marker;
	(void)state;

	ferry_config_init(&c);
	c.event_arg = &marker;
	c.pool_max = 77; /* struct beats default, environment beats struct */
	c.cq_size = 99;
	setenv("FERRY_CQ_SIZE", "128", 1);
	assert_int_equal(ferry_config_from_env(&c), 0);
	assert_ptr_equal(c.event_arg, &marker);
	assert_int_equal(c.pool_max, 77);
	assert_int_equal(c.cq_size, 128);
}

/* ------------------------------------------------------------------ value syntax */

struct one_case {
	const char *var, *value;
	int ok;
};

/* Reads a field through describe(), so one helper serves every type. */
static void describe_value(const struct ferry_config *c, const char *var, char *out,
			   size_t len)
{
	char *buf = NULL, *line, *save = NULL;
	size_t blen = 0;
	FILE *f = open_memstream(&buf, &blen);
	size_t vl = strlen(var);

	assert_non_null(f);
	assert_int_equal(ferryi_config_describe(c, f), 0);
	fclose(f);
	out[0] = '\0';
	for (line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		if (strncmp(line, var, vl) == 0 && line[vl] == '=') {
			char *end = strstr(line, "  # default ");
			assert_non_null(end);
			*end = '\0';
			snprintf(out, len, "%s", line + vl + 1);
			break;
		}
	}
	free(buf);
}

static void run_cases(const struct one_case *cases, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		struct ferry_config c, d;
		char before[128], after[128];
		int rc;

		clear_env(NULL);
		ferry_config_init(&c);
		d = c;
		describe_value(&c, cases[i].var, before, sizeof(before));
		setenv(cases[i].var, cases[i].value, 1);
		rc = ferry_config_from_env(&c);
		describe_value(&c, cases[i].var, after, sizeof(after));
		if (rc != (cases[i].ok ? 0 : FERRY_EINVAL))
			fail_msg("%s='%s': rc %d, want %s", cases[i].var, cases[i].value, rc,
				 cases[i].ok ? "0" : "-EINVAL");
		if (!cases[i].ok) {
			/* a refused value leaves the whole struct untouched */
			if (memcmp(&c, &d, sizeof(c)) != 0)
				fail_msg("%s='%s' changed the config", cases[i].var,
					 cases[i].value);
			assert_string_equal(before, after);
		}
	}
	clear_env(NULL);
}

static void test_env_integers(void **state)
{
	static const struct one_case cases[] = {
		{"FERRY_CONNECT_TIMEOUT_MS", "1", 1},
		{"FERRY_CONNECT_TIMEOUT_MS", "4294967295", 1},
		{"FERRY_CONNECT_TIMEOUT_MS", "4294967296", 0},
		{"FERRY_CONNECT_TIMEOUT_MS", "0", 0},
		{"FERRY_CONNECT_TIMEOUT_MS", "-1", 0},
		{"FERRY_CONNECT_TIMEOUT_MS", "+5", 0},
		{"FERRY_CONNECT_TIMEOUT_MS", " 5", 0},
		{"FERRY_CONNECT_TIMEOUT_MS", "5 ", 0},
		{"FERRY_CONNECT_TIMEOUT_MS", "5ms", 0},
		{"FERRY_CONNECT_TIMEOUT_MS", "0x10", 0},
		{"FERRY_CONNECT_TIMEOUT_MS", "1k", 0}, /* suffixes are for byte sizes */
		{"FERRY_CONNECT_TIMEOUT_MS", "1e3", 0},
		{"FERRY_CONNECT_TIMEOUT_MS", "abc", 0},
		{"FERRY_CONNECT_TIMEOUT_MS", "99999999999999999999999", 0},
		{"FERRY_IDLE_TIMEOUT", "4294967", 1},
		{"FERRY_IDLE_TIMEOUT", "4294968", 0},
		{"FERRY_PROBE_MISSES", "0", 1},
		{"FERRY_LISTEN_BACKLOG", "2147483647", 1},
		{"FERRY_LISTEN_BACKLOG", "2147483648", 0},
		{"FERRY_LISTEN_BACKLOG", "0", 0},
		{"FERRY_POOL_MAX", "0", 0},
		{"FERRY_MAX_ENDPOINTS", "0", 0},
		{"FERRY_CQ_SIZE", "0", 0},
		{"FERRY_CQ_SIZE", "1073741824", 1},
		{"FERRY_CQ_SIZE", "1073741825", 0},
		{"FERRY_RECONNECT_INITIAL_MS", "0", 0},
		{"FERRY_COMPRESS_LEVEL", "-7", 1},
		{"FERRY_COMPRESS_LEVEL", "22", 1},
		{"FERRY_COMPRESS_LEVEL", "0", 1},
		{"FERRY_COMPRESS_LEVEL", "-8", 0},
		{"FERRY_COMPRESS_LEVEL", "23", 0},
		{"FERRY_COMPRESS_LEVEL", "-", 0},
		{"FERRY_COMPRESS_LEVEL", "--1", 0},
		{"FERRY_COMPRESS_LEVEL", "-9223372036854775808", 0},
	};
	(void)state;
	run_cases(cases, sizeof(cases) / sizeof(cases[0]));
}

static void test_env_sizes(void **state)
{
	static const struct {
		const char *value;
		uint64_t want;
	} good[] = {
		{"64", 64},
		{"1k", 1024},
		{"1K", 1024},
		{"3m", UINT64_C(3) << 20},
		{"3M", UINT64_C(3) << 20},
		{"5g", UINT64_C(5) << 30},
		{"5G", UINT64_C(5) << 30},
		{"2t", UINT64_C(2) << 40},
		{"2T", UINT64_C(2) << 40},
		{"16777215T", UINT64_C(16777215) << 40},
		{"18446744073709551615", UINT64_MAX},
		{"0064", 64},
	};
	static const struct one_case bad[] = {
		{"FERRY_MAX_FRAME", "16777216T", 0}, /* 2^64: overflows */
		{"FERRY_MAX_FRAME", "18446744073709551616", 0},
		{"FERRY_MAX_FRAME", "1P", 0},
		{"FERRY_MAX_FRAME", "1KB", 0},
		{"FERRY_MAX_FRAME", "1KiB", 0},
		{"FERRY_MAX_FRAME", "k", 0},
		{"FERRY_MAX_FRAME", "1 k", 0},
		{"FERRY_MAX_FRAME", "1.5M", 0},
		{"FERRY_MAX_FRAME", "-1", 0},
		{"FERRY_MAX_FRAME", "63", 0},
		{"FERRY_EAGER_MAX", "63", 0},
		{"FERRY_EAGER_MAX", "64", 1},
		{"FERRY_UNEXPECTED_MAX", "0", 1},
		{"FERRY_COMPRESS_MIN", "0", 1},
		{"FERRY_COMPRESS_MIN", "1kk", 0},
	};
	(void)state;

	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		struct ferry_config c;
		ferry_config_init(&c);
		setenv("FERRY_MAX_FRAME", good[i].value, 1);
		assert_int_equal(ferry_config_from_env(&c), 0);
		if (c.max_frame != good[i].want)
			fail_msg("FERRY_MAX_FRAME=%s gave %llu", good[i].value,
				 (unsigned long long)c.max_frame);
	}
	run_cases(bad, sizeof(bad) / sizeof(bad[0]));
}

static void test_env_doubles(void **state)
{
	static const struct one_case cases[] = {
		{"FERRY_RECONNECT_MULTIPLIER", "1", 1},
		{"FERRY_RECONNECT_MULTIPLIER", "1.0", 1},
		{"FERRY_RECONNECT_MULTIPLIER", "3e2", 1},
		{"FERRY_RECONNECT_MULTIPLIER", "1000", 1},
		{"FERRY_RECONNECT_MULTIPLIER", "1000.5", 0},
		{"FERRY_RECONNECT_MULTIPLIER", "0.99", 0},
		{"FERRY_RECONNECT_MULTIPLIER", "nan", 0},
		{"FERRY_RECONNECT_MULTIPLIER", "inf", 0},
		{"FERRY_RECONNECT_MULTIPLIER", "2x", 0},
		{"FERRY_RECONNECT_MULTIPLIER", " 2", 0},
		{"FERRY_RECONNECT_MULTIPLIER", "", 1}, /* empty = unset */
		{"FERRY_RECONNECT_JITTER", "0", 1},
		{"FERRY_RECONNECT_JITTER", "1", 1},
		{"FERRY_RECONNECT_JITTER", "0.5", 1},
		{"FERRY_RECONNECT_JITTER", "-0.1", 0},
		{"FERRY_RECONNECT_JITTER", "1.0001", 0},
		{"FERRY_RECONNECT_JITTER", "1e999", 0},
		{"FERRY_RECONNECT_JITTER", ".", 0},
	};
	struct ferry_config c;
	(void)state;

	run_cases(cases, sizeof(cases) / sizeof(cases[0]));
	ferry_config_init(&c);
	setenv("FERRY_RECONNECT_JITTER", "0.125", 1);
	setenv("FERRY_RECONNECT_MULTIPLIER", "1.75", 1);
	assert_int_equal(ferry_config_from_env(&c), 0);
	assert_true(c.reconnect_jitter == 0.125);
	assert_true(c.reconnect_multiplier == 1.75);
}

static void test_env_enums(void **state)
{
	static const struct {
		const char *var, *value;
		int want; /* -1: refused */
	} cases[] = {
		{"FERRY_LOG", "off", FERRY_LOG_OFF},
		{"FERRY_LOG", "ERROR", FERRY_LOG_ERROR},
		{"FERRY_LOG", "Warn", FERRY_LOG_WARN},
		{"FERRY_LOG", "warning", FERRY_LOG_WARN},
		{"FERRY_LOG", "info", FERRY_LOG_INFO},
		{"FERRY_LOG", "debug", FERRY_LOG_DEBUG},
		{"FERRY_LOG", "TRACE", FERRY_LOG_TRACE},
		{"FERRY_LOG", "0", FERRY_LOG_OFF},
		{"FERRY_LOG", "5", FERRY_LOG_TRACE},
		{"FERRY_LOG", "3", FERRY_LOG_INFO},
		{"FERRY_LOG", "6", -1},
		{"FERRY_LOG", "-1", -1},
		{"FERRY_LOG", "10", -1},
		{"FERRY_LOG", "verbose", -1},
		{"FERRY_LOG", "debug ", -1},
		{"FERRY_FALLBACK", "prefer", FERRY_FALLBACK_PREFER},
		{"FERRY_FALLBACK", "REQUIRE", FERRY_FALLBACK_REQUIRE},
		{"FERRY_FALLBACK", "tcp", FERRY_FALLBACK_TCP_ONLY},
		{"FERRY_FALLBACK", "rdma", -1},
		{"FERRY_FALLBACK", "1", -1},
		{"FERRY_COMPRESS", "off", FERRY_COMPRESS_OFF},
		{"FERRY_COMPRESS", "On", FERRY_COMPRESS_ON},
		{"FERRY_COMPRESS", "AUTO", FERRY_COMPRESS_AUTO},
		{"FERRY_COMPRESS", "zstd", -1},
		{"FERRY_PROGRESS_THREAD", "1", 1},
		{"FERRY_PROGRESS_THREAD", "true", 1},
		{"FERRY_PROGRESS_THREAD", "YES", 1},
		{"FERRY_PROGRESS_THREAD", "on", 1},
		{"FERRY_PROGRESS_THREAD", "0", 0},
		{"FERRY_PROGRESS_THREAD", "no", 0},
		{"FERRY_PROGRESS_THREAD", "2", -1},
		{"FERRY_PROGRESS_THREAD", "enabled", -1},
	};
	(void)state;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct ferry_config c, d;
		int got, rc;

		clear_env(NULL);
		ferry_config_init(&c);
		/* start away from every accepted value's default */
		c.log_level = FERRY_LOG_ERROR + (strcmp(cases[i].value, "ERROR") == 0);
		c.fallback = FERRY_FALLBACK_TCP_ONLY - (strcmp(cases[i].value, "tcp") == 0);
		c.compress = FERRY_COMPRESS_ON - (strcmp(cases[i].value, "On") == 0);
		c.progress_thread = -5;
		d = c;
		setenv(cases[i].var, cases[i].value, 1);
		rc = ferry_config_from_env(&c);
		if (cases[i].want < 0) {
			if (rc != FERRY_EINVAL || memcmp(&c, &d, sizeof(c)) != 0)
				fail_msg("%s='%s' accepted", cases[i].var, cases[i].value);
			continue;
		}
		if (rc != 0)
			fail_msg("%s='%s' refused", cases[i].var, cases[i].value);
		if (strcmp(cases[i].var, "FERRY_LOG") == 0)
			got = (int)c.log_level;
		else if (strcmp(cases[i].var, "FERRY_FALLBACK") == 0)
			got = (int)c.fallback;
		else if (strcmp(cases[i].var, "FERRY_COMPRESS") == 0)
			got = (int)c.compress;
		else
			got = c.progress_thread;
		if (got != cases[i].want)
			fail_msg("%s='%s' gave %d, want %d", cases[i].var, cases[i].value, got,
				 cases[i].want);
	}
	clear_env(NULL);
}

/* One bad variable among good ones: the good ones apply, the bad one is named. */
static void test_env_malformed_applies_rest(void **state)
{
	struct ferry_config c;
	struct capture cap;
	const char *err;
	(void)state;

	ferry_config_init(&c);
	setenv("FERRY_POOL_MAX", "12", 1);
	setenv("FERRY_CQ_SIZE", "lots", 1);
	setenv("FERRY_COMPRESS", "maybe", 1);
	setenv("FERRY_EAGER_MAX", "4k", 1);
	capture_begin(&cap);
	assert_int_equal(ferry_config_from_env(&c), FERRY_EINVAL);
	err = capture_end(&cap);
	assert_int_equal(c.pool_max, 12);
	assert_int_equal(c.eager_max, 4096);
	assert_int_equal(c.cq_size, 65536);
	assert_int_equal(c.compress, FERRY_COMPRESS_OFF);
	assert_non_null(strstr(err, "FERRY_CQ_SIZE"));
	assert_non_null(strstr(err, "lots"));
	assert_non_null(strstr(err, "FERRY_COMPRESS"));
	assert_non_null(strstr(err, "maybe"));
	assert_null(strstr(err, "FERRY_POOL_MAX"));
	assert_non_null(strstr(err, " WARN "));
}

/* ------------------------------------------------------------------ check */

static void check_bad(void (*mutate)(struct ferry_config *), const char *field)
{
	struct ferry_config c;
	struct capture cap;
	const char *err;
	int rc;

	ferry_config_init(&c);
	mutate(&c);
	capture_begin(&cap);
	rc = ferryi_config_check(&c);
	err = capture_end(&cap);
	if (rc != FERRY_EINVAL)
		fail_msg("config with bad %s accepted", field);
	if (!strstr(err, field))
		fail_msg("check did not name %s: %s", field, err);
}

#define BAD_(fname, stmt)                                                            \
	static void fname(struct ferry_config *c) { stmt; }
BAD_(bad_misses, c->probe_misses = 0)
BAD_(bad_mult, c->reconnect_multiplier = 0.5)
BAD_(bad_mult_nan, c->reconnect_multiplier = NAN)
BAD_(bad_jitter_lo, c->reconnect_jitter = -0.01)
BAD_(bad_jitter_hi, c->reconnect_jitter = 1.5)
BAD_(bad_jitter_inf, c->reconnect_jitter = INFINITY)
BAD_(bad_reconnect_max, (c->reconnect_initial_ms = 5000, c->reconnect_max_ms = 4999))
BAD_(bad_reconnect_initial, c->reconnect_initial_ms = 0)
BAD_(bad_eager_small, c->eager_max = 63)
BAD_(bad_eager_frame, (c->max_frame = 1 << 20, c->eager_max = (1 << 20) + 1))
BAD_(bad_cq, c->cq_size = 0)
BAD_(bad_cq_huge, c->cq_size = UINT32_MAX)
BAD_(bad_level_hi, c->compress_level = 23)
BAD_(bad_level_lo, c->compress_level = -8)
BAD_(bad_log, c->log_level = (enum ferry_log_level)6)
BAD_(bad_fallback, c->fallback = (enum ferry_fallback)3)
BAD_(bad_compress, c->compress = (enum ferry_compress)7)
BAD_(bad_backlog, c->listen_backlog = 0)
BAD_(bad_progress, c->progress_thread = 2)
BAD_(bad_idle, c->idle_timeout_s = UINT32_MAX)
BAD_(bad_connect, c->connect_timeout_ms = 0)
BAD_(bad_handshake, c->handshake_timeout_ms = 0)
BAD_(bad_pool, c->pool_max = 0)
BAD_(bad_eps, c->max_endpoints = 0)
#undef BAD_

static void test_check(void **state)
{
	struct ferry_config c;
	(void)state;

	check_bad(bad_misses, "probe_misses");
	check_bad(bad_mult, "reconnect_multiplier");
	check_bad(bad_mult_nan, "reconnect_multiplier");
	check_bad(bad_jitter_lo, "reconnect_jitter");
	check_bad(bad_jitter_hi, "reconnect_jitter");
	check_bad(bad_jitter_inf, "reconnect_jitter");
	check_bad(bad_reconnect_max, "reconnect_max_ms");
	check_bad(bad_reconnect_initial, "reconnect_initial_ms");
	check_bad(bad_eager_small, "eager_max");
	check_bad(bad_eager_frame, "eager_max");
	check_bad(bad_cq, "cq_size");
	check_bad(bad_cq_huge, "cq_size");
	check_bad(bad_level_hi, "compress_level");
	check_bad(bad_level_lo, "compress_level");
	check_bad(bad_log, "log_level");
	check_bad(bad_fallback, "fallback");
	check_bad(bad_compress, "compress");
	check_bad(bad_backlog, "listen_backlog");
	check_bad(bad_progress, "progress_thread");
	check_bad(bad_idle, "idle_timeout_s");
	check_bad(bad_connect, "connect_timeout_ms");
	check_bad(bad_handshake, "handshake_timeout_ms");
	check_bad(bad_pool, "pool_max");
	check_bad(bad_eps, "max_endpoints");

	/* limits that are fine */
	ferry_config_init(&c);
	c.probe_interval_ms = 0; /* probes off: misses may be 0 */
	c.probe_misses = 0;
	c.reconnect_multiplier = 1.0;
	c.reconnect_jitter = 1.0;
	c.reconnect_initial_ms = c.reconnect_max_ms = 100;
	c.eager_max = 64;
	c.max_frame = 64;
	c.compress_level = -7;
	c.idle_timeout_s = 0;
	c.unexpected_max = 0;
	c.reconnect_attempts = 0;
	assert_int_equal(ferryi_config_check(&c), 0);
	c.compress_level = 22;
	c.reconnect_jitter = 0.0;
	assert_int_equal(ferryi_config_check(&c), 0);

	assert_int_equal(ferryi_config_check(NULL), FERRY_EINVAL);
}

/* ------------------------------------------------------------------ describe */

static void test_describe_defaults(void **state)
{
	char *buf = NULL, *line, *save = NULL;
	size_t len = 0, n = 0;
	FILE *f = open_memstream(&buf, &len);
	(void)state;

	assert_non_null(f);
	assert_int_equal(ferryi_config_describe(NULL, f), 0);
	fclose(f);
	for (line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char name[64], *eq = strchr(line, '='), *hash = strstr(line, "  # default ");

		assert_true(n < NVARS);
		assert_non_null(eq);
		assert_non_null(hash);
		snprintf(name, sizeof(name), "%.*s", (int)(eq - line), line);
		assert_string_equal(name, all_vars[n]);
		/* with the defaults, value and default agree (the unset strings aside) */
		if (strcmp(name, "FERRY_PROVIDERS") == 0 || strcmp(name, "FERRY_TCP_CONGESTION") == 0)
			assert_true(strcmp(eq, "=  # default (unset)") == 0);
		else
			assert_true(strncmp(eq + 1, hash + 12, (size_t)(hash - eq - 1)) == 0 &&
				    strlen(hash + 12) == (size_t)(hash - eq - 1));
		n++;
	}
	assert_int_equal(n, NVARS);
	free(buf);
	assert_int_equal(ferryi_config_describe(NULL, NULL), FERRY_EINVAL);
}

/* The public ferry_config_print(): what a context would use, environment applied. */
static char *print_config(const struct ferry_config *cfg, int *rc)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);

	assert_non_null(f);
	*rc = ferry_config_print(cfg, f);
	fclose(f);
	return buf;
}

static void test_config_print(void **state)
{
	struct ferry_config c;
	char *out;
	int rc;
	(void)state;

	out = print_config(NULL, &rc);
	assert_int_equal(rc, 0);
	assert_non_null(strstr(out, "\nFERRY_EAGER_MAX=64K  # default 64K\n"));
	assert_null(strstr(out, "set in the environment"));
	free(out);

	/* A struct field, the environment over it, an environment-only variable. */
	ferry_config_init(&c);
	c.cq_size = 1024;
	c.eager_max = 1 << 20;
	setenv("FERRY_EAGER_MAX", "4K", 1);
	setenv("FERRY_TCP_CONGESTION", "cubic", 1);
	out = print_config(&c, &rc);
	assert_int_equal(rc, 0);
	assert_non_null(strstr(out, "\nFERRY_CQ_SIZE=1024  # default 65536\n"));
	assert_non_null(strstr(out, "\nFERRY_EAGER_MAX=4K  # default 64K; set in the environment\n"));
	assert_non_null(strstr(out, "\nFERRY_TCP_CONGESTION=cubic  # default (unset); set in the "
				    "environment\n"));
	assert_int_equal(c.eager_max, 1 << 20); /* cfg itself is not changed */
	free(out);

	/* Malformed: logged, ignored, reported; the line shows the value in use. */
	setenv("FERRY_CQ_SIZE", "many", 1);
	out = print_config(&c, &rc);
	assert_int_equal(rc, FERRY_EINVAL);
	assert_non_null(strstr(out, "\nFERRY_CQ_SIZE=1024  # default 65536; set in the "
				    "environment\n"));
	free(out);
	unsetenv("FERRY_CQ_SIZE");
	unsetenv("FERRY_EAGER_MAX");
	unsetenv("FERRY_TCP_CONGESTION");
	assert_int_equal(ferry_config_print(NULL, NULL), FERRY_EINVAL);
}

static void test_describe_spot_values(void **state)
{
	char v[128];
	struct ferry_config c;
	(void)state;

	describe_value(NULL, "FERRY_MAX_FRAME", v, sizeof(v));
	assert_string_equal(v, "1T");
	describe_value(NULL, "FERRY_UNEXPECTED_MAX", v, sizeof(v));
	assert_string_equal(v, "64M");
	describe_value(NULL, "FERRY_EAGER_MAX", v, sizeof(v));
	assert_string_equal(v, "64K");
	describe_value(NULL, "FERRY_RECONNECT_JITTER", v, sizeof(v));
	assert_string_equal(v, "0.2");
	describe_value(NULL, "FERRY_LOG", v, sizeof(v));
	assert_string_equal(v, "warn");
	describe_value(NULL, "FERRY_FALLBACK", v, sizeof(v));
	assert_string_equal(v, "prefer");
	ferry_config_init(&c);
	c.max_frame = 1000;
	c.providers = "ofi";
	describe_value(&c, "FERRY_MAX_FRAME", v, sizeof(v));
	assert_string_equal(v, "1000");
	describe_value(&c, "FERRY_PROVIDERS", v, sizeof(v));
	assert_string_equal(v, "ofi");
}

/* What describe prints, fed back through the environment, gives the same config. */
static void test_describe_round_trip(void **state)
{
	struct ferry_config c, back;
	char *buf = NULL, *line, *save = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	(void)state;

	ferry_config_init(&c);
	c.log_level = FERRY_LOG_TRACE;
	c.fallback = FERRY_FALLBACK_TCP_ONLY;
	c.providers = "verbs,tcp";
	c.connect_timeout_ms = 4321;
	c.handshake_timeout_ms = 99;
	c.idle_timeout_s = 4294967;
	c.probe_interval_ms = 0;
	c.probe_misses = 0;
	c.reconnect_initial_ms = 3;
	c.reconnect_max_ms = 4000000000u;
	c.reconnect_multiplier = 1.1;
	c.reconnect_jitter = 0.3333333333333333;
	c.reconnect_attempts = 123456;
	c.pool_max = 1;
	c.listen_backlog = 7;
	c.max_endpoints = 4294967295u;
	c.eager_max = 3 * 1024 + 1;
	c.max_frame = UINT64_C(5) << 30;
	c.unexpected_max = UINT64_MAX;
	c.compress = FERRY_COMPRESS_ON;
	c.compress_level = -7;
	c.compress_min = 0;
	c.progress_thread = 1;
	c.cq_size = 3;
	assert_int_equal(ferryi_config_check(&c), 0);

	assert_non_null(f);
	assert_int_equal(ferryi_config_describe(&c, f), 0);
	fclose(f);
	for (line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char *eq = strchr(line, '='), *hash = strstr(line, "  # default ");
		assert_non_null(eq);
		assert_non_null(hash);
		*eq = '\0';
		*hash = '\0';
		setenv(line, eq + 1, 1);
	}
	free(buf);
	ferry_config_init(&back);
	assert_int_equal(ferry_config_from_env(&back), 0);
	assert_string_equal(back.providers, c.providers);
	back.providers = c.providers;
	assert_memory_equal(&back, &c, sizeof(c));
}

/* ------------------------------------------------------------------ log */

static void test_log_parse(void **state)
{
	enum ferry_log_level l = FERRY_LOG_OFF;
	(void)state;

	assert_int_equal(ferryi_log_parse("DeBuG", &l), 0);
	assert_int_equal(l, FERRY_LOG_DEBUG);
	assert_int_equal(ferryi_log_parse("4", &l), 0);
	assert_int_equal(l, FERRY_LOG_DEBUG);
	assert_int_equal(ferryi_log_parse("", &l), FERRY_EINVAL);
	assert_int_equal(ferryi_log_parse("44", &l), FERRY_EINVAL);
	assert_int_equal(ferryi_log_parse(NULL, &l), FERRY_EINVAL);
	assert_int_equal(ferryi_log_parse("info", NULL), FERRY_EINVAL);
}

static void test_log_format(void **state)
{
	struct capture cap;
	const char *out;
	char want[128], longmsg[3000];
	(void)state;

	capture_begin(&cap);
	ferryi_log(NULL, FERRY_LOG_INFO, "hello %d", 42);
	ferryi_log(NULL, FERRY_LOG_ERROR, "already ends\n");
	ferryi_log(NULL, FERRY_LOG_OFF, "never printed");
	out = capture_end(&cap);
	snprintf(want, sizeof(want), "ferry[%ld] INFO hello 42\nferry[%ld] ERROR already ends\n",
		 (long)getpid(), (long)getpid());
	assert_string_equal(out, want);

	memset(longmsg, 'x', sizeof(longmsg) - 1);
	longmsg[sizeof(longmsg) - 1] = '\0';
	capture_begin(&cap);
	ferryi_log(NULL, FERRY_LOG_WARN, "%s", longmsg);
	out = capture_end(&cap);
	size_t n = strlen(out);
	assert_true(n > 100 && n <= 1024);
	assert_string_equal(out + n - 4, "...\n");
	assert_ptr_equal(strchr(out, '\n'), out + n - 1); /* one line */

	/* the global level: FERRY_LOG was "warn" when it was first read (see main) */
	assert_int_equal(ferryi_log_level(NULL), FERRY_LOG_WARN);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup(test_defaults, clear_env),
		cmocka_unit_test_setup(test_env_unset_changes_nothing, clear_env),
		cmocka_unit_test_setup(test_env_every_variable, clear_env),
		cmocka_unit_test_setup(test_env_keeps_non_env_fields, clear_env),
		cmocka_unit_test_setup(test_env_integers, clear_env),
		cmocka_unit_test_setup(test_env_sizes, clear_env),
		cmocka_unit_test_setup(test_env_doubles, clear_env),
		cmocka_unit_test_setup(test_env_enums, clear_env),
		cmocka_unit_test_setup(test_env_malformed_applies_rest, clear_env),
		cmocka_unit_test_setup(test_check, clear_env),
		cmocka_unit_test_setup(test_describe_defaults, clear_env),
		cmocka_unit_test_setup(test_describe_spot_values, clear_env),
		cmocka_unit_test_setup(test_describe_round_trip, clear_env),
		cmocka_unit_test_setup(test_config_print, clear_env),
		cmocka_unit_test_setup(test_log_parse, clear_env),
		cmocka_unit_test_setup(test_log_format, clear_env),
	};

	/* Pin the process-wide log level before anything logs, whatever the caller set. */
	setenv("FERRY_LOG", "warn", 1);
	(void)ferryi_log_level(NULL);
	return cmocka_run_group_tests(tests, NULL, clear_env);
}
