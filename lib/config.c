/*
 * config.c - defaults, FERRY_* environment overrides and validation.
 *
 * One table (cfg_vars) lists every variable with its field, kind and limits. The
 * environment parser, the per-field checks of ferryi_config_check() and
 * ferryi_config_describe() all walk it, so adding a field means adding one line here
 * and the parser, the checks and the printed documentation follow. Defaults live only
 * in ferry_config_init(); describe() asks it for them.
 *
 * Limits in the table are absolute (what a field can ever hold); relations between
 * fields (reconnect_max >= reconnect_initial, ...) are checked in ferryi_config_check().
 */
#include "config.h"
#include "core.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Enum fields are read and written as int. */
_Static_assert(sizeof(enum ferry_log_level) == sizeof(int), "enum size");
_Static_assert(sizeof(enum ferry_fallback) == sizeof(int), "enum size");
_Static_assert(sizeof(enum ferry_compress) == sizeof(int), "enum size");

enum cfg_kind {
	CFG_LOG,    /* enum ferry_log_level, parsed by ferryi_log_parse (names or 0-5) */
	CFG_ENUM,   /* int-sized enum, by name (case-insensitive)                      */
	CFG_BOOL,   /* int 0|1; also true/false, yes/no, on/off                          */
	CFG_STR,    /* const char *, kept pointing into the environment                */
	CFG_U32,    /* uint32_t, decimal                                                */
	CFG_SIZE,   /* uint64_t byte size, decimal with optional K/M/G/T (powers of 1024) */
	CFG_INT,    /* int, decimal, may be negative                                    */
	CFG_DOUBLE, /* double, strtod syntax, finite                                    */
};

struct cfg_var {
	const char *name;   /* environment variable                         */
	const char *field;  /* struct ferry_config member, for messages     */
	size_t off;         /* offsetof(struct ferry_config, field)         */
	enum cfg_kind kind;
	const char *const *names; /* CFG_LOG/CFG_ENUM: value -> name, NULL-terminated */
	int64_t min;        /* integer kinds: inclusive limits              */
	uint64_t max;
	double dmin, dmax;  /* CFG_DOUBLE: inclusive limits                 */
};

static const char *const log_names[] = {"off", "error", "warn", "info", "debug", "trace", NULL};
static const char *const fallback_names[] = {
	[FERRY_FALLBACK_PREFER] = "prefer",
	[FERRY_FALLBACK_REQUIRE] = "require",
	[FERRY_FALLBACK_TCP_ONLY] = "tcp",
	NULL,
};
static const char *const compress_names[] = {
	[FERRY_COMPRESS_OFF] = "off",
	[FERRY_COMPRESS_ON] = "on",
	[FERRY_COMPRESS_AUTO] = "auto",
	NULL,
};

#define CFG_OFF_(fld) offsetof(struct ferry_config, fld)
#define CFG_ENUM_VAR(var, fld, knd, nm, count)                                       \
	{ .name = (var), .field = #fld, .off = CFG_OFF_(fld), .kind = (knd), .names = (nm), \
	  .min = 0, .max = (count)-1 }
#define CFG_INT_VAR(var, fld, knd, lo, hi)                                           \
	{ .name = (var), .field = #fld, .off = CFG_OFF_(fld), .kind = (knd), .min = (lo), \
	  .max = (hi) }
#define CFG_DBL_VAR(var, fld, lo, hi)                                                \
	{ .name = (var), .field = #fld, .off = CFG_OFF_(fld), .kind = CFG_DOUBLE,        \
	  .dmin = (lo), .dmax = (hi) }

/* idle_timeout_s travels as milliseconds in a uint32_t at the handshake. */
#define CFG_IDLE_MAX_S (UINT32_MAX / 1000u)
/* A CQ ring's indices (head + count, both below the size) must stay within 32 bits. */
#define CFG_CQ_MAX (1u << 30)

static const struct cfg_var cfg_vars[] = {
	CFG_ENUM_VAR("FERRY_LOG", log_level, CFG_LOG, log_names, 6),
	CFG_ENUM_VAR("FERRY_FALLBACK", fallback, CFG_ENUM, fallback_names, 3),
	{ .name = "FERRY_PROVIDERS", .field = "providers", .off = CFG_OFF_(providers),
	  .kind = CFG_STR },
	CFG_INT_VAR("FERRY_CONNECT_TIMEOUT_MS", connect_timeout_ms, CFG_U32, 1, UINT32_MAX),
	CFG_INT_VAR("FERRY_HANDSHAKE_TIMEOUT_MS", handshake_timeout_ms, CFG_U32, 1, UINT32_MAX),
	CFG_INT_VAR("FERRY_IDLE_TIMEOUT", idle_timeout_s, CFG_U32, 0, CFG_IDLE_MAX_S),
	CFG_INT_VAR("FERRY_PROBE_INTERVAL_MS", probe_interval_ms, CFG_U32, 0, UINT32_MAX),
	CFG_INT_VAR("FERRY_PROBE_MISSES", probe_misses, CFG_U32, 0, UINT32_MAX),
	CFG_INT_VAR("FERRY_PROBE_IDLE_INTERVAL_MS", probe_idle_interval_ms, CFG_U32, 0, UINT32_MAX),
	CFG_INT_VAR("FERRY_RECONNECT_INITIAL_MS", reconnect_initial_ms, CFG_U32, 1, UINT32_MAX),
	CFG_INT_VAR("FERRY_RECONNECT_MAX_MS", reconnect_max_ms, CFG_U32, 1, UINT32_MAX),
	CFG_DBL_VAR("FERRY_RECONNECT_MULTIPLIER", reconnect_multiplier, 1.0, 1000.0),
	CFG_DBL_VAR("FERRY_RECONNECT_JITTER", reconnect_jitter, 0.0, 1.0),
	CFG_INT_VAR("FERRY_RECONNECT_ATTEMPTS", reconnect_attempts, CFG_U32, 0, UINT32_MAX),
	CFG_INT_VAR("FERRY_POOL_MAX", pool_max, CFG_U32, 1, UINT32_MAX),
	CFG_INT_VAR("FERRY_LISTEN_BACKLOG", listen_backlog, CFG_U32, 1, INT_MAX),
	CFG_INT_VAR("FERRY_MAX_ENDPOINTS", max_endpoints, CFG_U32, 1, UINT32_MAX),
	CFG_INT_VAR("FERRY_EAGER_MAX", eager_max, CFG_SIZE, 64, UINT64_MAX),
	CFG_INT_VAR("FERRY_MAX_FRAME", max_frame, CFG_SIZE, 64, UINT64_MAX),
	CFG_INT_VAR("FERRY_UNEXPECTED_MAX", unexpected_max, CFG_SIZE, 0, UINT64_MAX),
	CFG_ENUM_VAR("FERRY_COMPRESS", compress, CFG_ENUM, compress_names, 3),
	CFG_INT_VAR("FERRY_COMPRESS_LEVEL", compress_level, CFG_INT, -7, 22),
	CFG_INT_VAR("FERRY_COMPRESS_MIN", compress_min, CFG_SIZE, 0, UINT64_MAX),
	CFG_INT_VAR("FERRY_PROGRESS_THREAD", progress_thread, CFG_BOOL, 0, 1),
	CFG_INT_VAR("FERRY_CQ_SIZE", cq_size, CFG_U32, 1, CFG_CQ_MAX),
};

/*
 * Tunables without a field in struct ferry_config yet (see config.h): same kinds and
 * checks, environment only, stored in struct ferryi_config_ext.
 */
#define CFG_EXT_VAR(var, fld, knd, lo, hi)                                           \
	{ .name = (var), .field = #fld, .off = offsetof(struct ferryi_config_ext, fld),   \
	  .kind = (knd), .min = (lo), .max = (hi) }

static const struct cfg_var cfg_ext_vars[] = {
	CFG_EXT_VAR("FERRY_ZEROCOPY_MIN", zerocopy_min, CFG_SIZE, 0, UINT64_MAX),
	CFG_EXT_VAR("FERRY_COMPRESS_ACCEPT", compress_accept, CFG_BOOL, 0, 1),
	CFG_EXT_VAR("FERRY_REG_CACHE_BYTES", reg_cache_bytes, CFG_SIZE, 0, UINT64_MAX),
	CFG_EXT_VAR("FERRY_REG_CACHE_ENTRIES", reg_cache_entries, CFG_U32, 0, UINT32_MAX),
	CFG_EXT_VAR("FERRY_TCP_CONGESTION", tcp_congestion, CFG_STR, 0, 0),
	CFG_EXT_VAR("FERRY_TCP_RMA_WINDOW", tcp_rma_window, CFG_SIZE, 0, UINT64_MAX),
};

void ferryi_config_ext_init(struct ferryi_config_ext *x)
{
	memset(x, 0, sizeof(*x));
	/*
	 * Measured (docs/BENCHMARKS-compress.md): below a few hundred KiB the page
	 * pinning and the completion round trip cost more than the copy they save.
	 */
	x->zerocopy_min = UINT64_C(256) << 10;
	x->compress_accept = 1;
	x->reg_cache_bytes = UINT64_C(256) << 20; /* lowered under a memlock limit: regcache.c */
	x->reg_cache_entries = 1024;
	/*
	 * Measured (docs/BENCHMARKS.md, "One-sided bytes in flight under BBR"): on a
	 * same-host BBR connection, 1 MiB unanswered streams at 1.7x an unlimited queue.
	 */
	x->tcp_rma_window = UINT64_C(1) << 20;
}

void ferry_config_init(struct ferry_config *cfg)
{
	if (!cfg)
		return;
	/* Zeroed first so that padding is too: configs compare equal with memcmp. */
	memset(cfg, 0, sizeof(*cfg));
	cfg->log_level = FERRY_LOG_WARN;
	cfg->fallback = FERRY_FALLBACK_PREFER;
	cfg->providers = NULL; /* every provider built in */
	cfg->connect_timeout_ms = 10000;
	cfg->handshake_timeout_ms = 5000;
	cfg->idle_timeout_s = 30;
	cfg->probe_interval_ms = 1000;
	cfg->probe_misses = 3;
	cfg->probe_idle_interval_ms = 30000;
	cfg->reconnect_initial_ms = 1000;
	cfg->reconnect_max_ms = 30000;
	cfg->reconnect_multiplier = 2.0;
	cfg->reconnect_jitter = 0.2;
	cfg->reconnect_attempts = 5;
	cfg->pool_max = 1024;
	cfg->listen_backlog = 1024;
	cfg->max_endpoints = 65536;
	cfg->eager_max = 65536;
	cfg->max_frame = UINT64_C(1) << 40;
	cfg->unexpected_max = UINT64_C(64) << 20;
	cfg->compress = FERRY_COMPRESS_OFF;
	cfg->compress_level = 1;
	cfg->compress_min = 16384;
	cfg->progress_thread = 0;
	cfg->cq_size = 65536;
	cfg->event_fn = NULL;
	cfg->event_arg = NULL;
}

/* ------------------------------------------------------------------ field access */

static void *cfg_field(void *cfg, const struct cfg_var *v)
{
	return (char *)cfg + v->off;
}

static const void *cfg_cfield(const void *cfg, const struct cfg_var *v)
{
	return (const char *)cfg + v->off;
}

/* Integer kinds as int64 (signed kinds) or uint64 (unsigned); see cfg_is_signed. */
static bool cfg_is_signed(const struct cfg_var *v)
{
	return v->kind != CFG_U32 && v->kind != CFG_SIZE;
}

static uint64_t cfg_get_int(const void *cfg, const struct cfg_var *v)
{
	const void *p = cfg_cfield(cfg, v);
	uint32_t u32;
	uint64_t u64;
	int i;

	switch (v->kind) {
	case CFG_U32:
		memcpy(&u32, p, sizeof(u32));
		return u32;
	case CFG_SIZE:
		memcpy(&u64, p, sizeof(u64));
		return u64;
	default:
		memcpy(&i, p, sizeof(i));
		return (uint64_t)(int64_t)i;
	}
}

static void cfg_set_int(void *cfg, const struct cfg_var *v, uint64_t val)
{
	void *p = cfg_field(cfg, v);
	uint32_t u32 = (uint32_t)val;
	int i = (int)(int64_t)val;

	switch (v->kind) {
	case CFG_U32:
		memcpy(p, &u32, sizeof(u32));
		break;
	case CFG_SIZE:
		memcpy(p, &val, sizeof(val));
		break;
	default:
		memcpy(p, &i, sizeof(i));
		break;
	}
}

static bool cfg_in_range(const struct cfg_var *v, uint64_t val)
{
	if (cfg_is_signed(v))
		return (int64_t)val >= v->min && (int64_t)val <= (int64_t)v->max;
	return val >= (uint64_t)v->min && val <= v->max;
}

/* ------------------------------------------------------------------ parsing */

static int cfg_parse_uint(const char *s, bool suffix, uint64_t *out)
{
	char *end;
	unsigned long long n;

	/* strtoull would accept leading blanks, a sign and wrap "-1" around. */
	if (*s < '0' || *s > '9')
		return FERRY_EINVAL;
	errno = 0;
	n = strtoull(s, &end, 10);
	if (errno == ERANGE)
		return FERRY_EINVAL;
	if (suffix && *end) {
		unsigned shift;
		switch (*end) {
		case 'k': case 'K': shift = 10; break;
		case 'm': case 'M': shift = 20; break;
		case 'g': case 'G': shift = 30; break;
		case 't': case 'T': shift = 40; break;
		default: return FERRY_EINVAL;
		}
		if (n > (UINT64_MAX >> shift))
			return FERRY_EINVAL;
		n <<= shift;
		end++;
	}
	if (*end)
		return FERRY_EINVAL;
	*out = n;
	return 0;
}

static int cfg_parse_sint(const char *s, int64_t *out)
{
	bool neg = (*s == '-');
	uint64_t mag;

	if (cfg_parse_uint(s + neg, false, &mag) < 0)
		return FERRY_EINVAL;
	if (mag > (uint64_t)INT64_MAX)
		return FERRY_EINVAL;
	*out = neg ? -(int64_t)mag : (int64_t)mag;
	return 0;
}

static int cfg_parse_bool(const char *s, uint64_t *out)
{
	static const char *const yes[] = {"1", "true", "yes", "on"};
	static const char *const no[] = {"0", "false", "no", "off"};

	for (size_t i = 0; i < FERRYI_ARRAY_LEN(yes); i++) {
		if (strcasecmp(s, yes[i]) == 0) {
			*out = 1;
			return 0;
		}
		if (strcasecmp(s, no[i]) == 0) {
			*out = 0;
			return 0;
		}
	}
	return FERRY_EINVAL;
}

static int cfg_parse_name(const char *s, const char *const *names, uint64_t *out)
{
	for (size_t i = 0; names[i]; i++) {
		if (strcasecmp(s, names[i]) == 0) {
			*out = i;
			return 0;
		}
	}
	return FERRY_EINVAL;
}

/* Parses s into the field of v; the field is untouched on error. */
static int cfg_parse_var(void *cfg, const struct cfg_var *v, const char *s)
{
	uint64_t u = 0;
	int64_t i;
	double d;
	char *end;
	int rc;

	switch (v->kind) {
	case CFG_STR: {
		const char *p = s;
		memcpy(cfg_field(cfg, v), &p, sizeof(p));
		return 0;
	}
	case CFG_DOUBLE:
		/* Like the integers: no leading blanks (strtod would skip them). */
		if (isspace((unsigned char)*s))
			return FERRY_EINVAL;
		errno = 0;
		d = strtod(s, &end);
		if (end == s || *end || errno == ERANGE || !isfinite(d) || d < v->dmin ||
		    d > v->dmax)
			return FERRY_EINVAL;
		memcpy(cfg_field(cfg, v), &d, sizeof(d));
		return 0;
	case CFG_LOG: {
		enum ferry_log_level lvl = FERRY_LOG_OFF;
		rc = ferryi_log_parse(s, &lvl);
		u = (uint64_t)lvl;
		break;
	}
	case CFG_ENUM:
		rc = cfg_parse_name(s, v->names, &u);
		break;
	case CFG_BOOL:
		rc = cfg_parse_bool(s, &u);
		break;
	case CFG_INT:
		rc = cfg_parse_sint(s, &i);
		u = (uint64_t)i;
		break;
	case CFG_U32:
	case CFG_SIZE:
		rc = cfg_parse_uint(s, v->kind == CFG_SIZE, &u);
		break;
	default:
		return FERRY_EINVAL;
	}
	if (rc < 0 || !cfg_in_range(v, u))
		return FERRY_EINVAL;
	cfg_set_int(cfg, v, u);
	return 0;
}

/* ------------------------------------------------------------------ formatting */

static void cfg_fmt_size(uint64_t n, char *buf, size_t len)
{
	static const char sfx[] = "TGMK";

	for (int i = 0; i < 4; i++) {
		unsigned shift = 40 - 10 * (unsigned)i;
		if (n && (n & ((UINT64_C(1) << shift) - 1)) == 0) {
			snprintf(buf, len, "%" PRIu64 "%c", n >> shift, sfx[i]);
			return;
		}
	}
	snprintf(buf, len, "%" PRIu64, n);
}

/* The shortest %g form that reads back as the same double. */
static void cfg_fmt_double(double d, char *buf, size_t len)
{
	for (int prec = 1; prec <= 17; prec++) {
		snprintf(buf, len, "%.*g", prec, d);
		if (strtod(buf, NULL) == d)
			return;
	}
}

static void cfg_fmt_var(const void *cfg, const struct cfg_var *v,
			char *buf, size_t len)
{
	const void *p = cfg_cfield(cfg, v);
	uint64_t u;

	switch (v->kind) {
	case CFG_STR: {
		const char *s;
		memcpy(&s, p, sizeof(s));
		snprintf(buf, len, "%s", s ? s : "");
		return;
	}
	case CFG_DOUBLE: {
		double d;
		memcpy(&d, p, sizeof(d));
		cfg_fmt_double(d, buf, len);
		return;
	}
	default:
		break;
	}
	u = cfg_get_int(cfg, v);
	switch (v->kind) {
	case CFG_LOG:
	case CFG_ENUM:
		if (u <= v->max)
			snprintf(buf, len, "%s", v->names[u]);
		else
			snprintf(buf, len, "%" PRId64, (int64_t)u);
		break;
	case CFG_SIZE:
		cfg_fmt_size(u, buf, len);
		break;
	case CFG_U32:
		snprintf(buf, len, "%" PRIu64, u);
		break;
	default:
		snprintf(buf, len, "%" PRId64, (int64_t)u);
		break;
	}
}

/* What a variable accepts, for messages. */
static void cfg_fmt_expect(const struct cfg_var *v, char *buf, size_t len)
{
	size_t n = 0;

	switch (v->kind) {
	case CFG_LOG:
	case CFG_ENUM:
		n += (size_t)snprintf(buf, len, "one of ");
		for (size_t i = 0; v->names[i] && n < len; i++)
			n += (size_t)snprintf(buf + n, len - n, "%s%s", i ? "|" : "", v->names[i]);
		if (v->kind == CFG_LOG && n < len)
			snprintf(buf + n, len - n, " or 0-5");
		break;
	case CFG_BOOL:
		snprintf(buf, len, "0|1 (true/false, yes/no, on/off)");
		break;
	case CFG_DOUBLE:
		snprintf(buf, len, "a number in [%g, %g]", v->dmin, v->dmax);
		break;
	case CFG_INT:
		snprintf(buf, len, "an integer in %" PRId64 "..%" PRId64, v->min, (int64_t)v->max);
		break;
	case CFG_U32:
		snprintf(buf, len, "an integer in %" PRId64 "..%" PRIu64, v->min, v->max);
		break;
	case CFG_SIZE: {
		char hi[32];
		if (v->max == UINT64_MAX) {
			snprintf(buf, len, "a byte count >= %" PRId64 " (optional suffix K|M|G|T)",
				 v->min);
			break;
		}
		cfg_fmt_size(v->max, hi, sizeof(hi));
		snprintf(buf, len, "a byte count in %" PRId64 "..%s (optional suffix K|M|G|T)",
			 v->min, hi);
		break;
	}
	default:
		snprintf(buf, len, "a string");
		break;
	}
}

/* ------------------------------------------------------------------ environment */

/* Applies the environment to the fields of base that vars describe. */
static int cfg_apply_env(void *cfg, const struct cfg_var *vars, size_t nvars)
{
	int rc = 0;

	for (size_t i = 0; i < nvars; i++) {
		const struct cfg_var *v = &vars[i];
		const char *s = getenv(v->name);
		char keep[64], expect[160];

		/* "FERRY_X= cmd" is how shells unset a variable for one command. */
		if (!s || !*s)
			continue;
		if (cfg_parse_var(cfg, v, s) == 0)
			continue;
		cfg_fmt_var(cfg, v, keep, sizeof(keep));
		cfg_fmt_expect(v, expect, sizeof(expect));
		FERRYI_WARN(NULL, "%s='%.80s' ignored: expected %s; %s stays %s", v->name, s,
			    expect, v->field, keep);
		rc = FERRY_EINVAL;
	}
	return rc;
}

int ferry_config_from_env(struct ferry_config *cfg)
{
	if (!cfg)
		return FERRY_EINVAL;
	return cfg_apply_env(cfg, cfg_vars, FERRYI_ARRAY_LEN(cfg_vars));
}

int ferryi_config_ext_from_env(struct ferryi_config_ext *x)
{
	if (!x)
		return FERRY_EINVAL;
	return cfg_apply_env(x, cfg_ext_vars, FERRYI_ARRAY_LEN(cfg_ext_vars));
}

/* ------------------------------------------------------------------ validation */

static bool cfg_var_ok(const void *cfg, const struct cfg_var *v)
{
	char val[64], expect[160];

	switch (v->kind) {
	case CFG_STR:
		return true;
	case CFG_DOUBLE: {
		double d;
		memcpy(&d, cfg_cfield(cfg, v), sizeof(d));
		if (isfinite(d) && d >= v->dmin && d <= v->dmax)
			return true;
		break;
	}
	default:
		if (cfg_in_range(v, cfg_get_int(cfg, v)))
			return true;
		break;
	}
	cfg_fmt_var(cfg, v, val, sizeof(val));
	cfg_fmt_expect(v, expect, sizeof(expect));
	FERRYI_ERR(NULL, "config: %s (%s) is %s; expected %s", v->field, v->name, val, expect);
	return false;
}

int ferryi_config_check(const struct ferry_config *cfg)
{
	bool ok = true;

	if (!cfg) {
		FERRYI_ERR(NULL, "config: NULL configuration");
		return FERRY_EINVAL;
	}
	/* Report every problem at once, not one per attempt. */
	for (size_t i = 0; i < FERRYI_ARRAY_LEN(cfg_vars); i++)
		ok &= cfg_var_ok(cfg, &cfg_vars[i]);

	if (cfg->probe_interval_ms > 0 && cfg->probe_misses == 0) {
		FERRYI_ERR(NULL, "config: probe_misses (FERRY_PROBE_MISSES) is 0 while probes are "
				 "on (probe_interval_ms %" PRIu32 "); set it >= 1 or "
				 "probe_interval_ms to 0",
			   cfg->probe_interval_ms);
		ok = false;
	}
	if (cfg->reconnect_max_ms < cfg->reconnect_initial_ms) {
		FERRYI_ERR(NULL, "config: reconnect_max_ms (FERRY_RECONNECT_MAX_MS) %" PRIu32
				 " is below reconnect_initial_ms %" PRIu32,
			   cfg->reconnect_max_ms, cfg->reconnect_initial_ms);
		ok = false;
	}
	if (cfg->eager_max > cfg->max_frame) {
		FERRYI_ERR(NULL, "config: eager_max (FERRY_EAGER_MAX) %" PRIu64
				 " is above max_frame %" PRIu64,
			   cfg->eager_max, cfg->max_frame);
		ok = false;
	}
	if (cfg->event_fn == NULL && cfg->event_arg != NULL)
		FERRYI_DBG(NULL, "config: event_arg set without event_fn; it is unused");
	return ok ? 0 : FERRY_EINVAL;
}

/* ------------------------------------------------------------------ description */

/* One line per variable of vars: cfg's value and def's. */
static int cfg_describe_vars(const void *cfg, const void *def, const struct cfg_var *vars,
			     size_t nvars, bool mark_env, FILE *out)
{
	for (size_t i = 0; i < nvars; i++) {
		const struct cfg_var *v = &vars[i];
		char val[64], dval[64];
		const char *shown = val;

		cfg_fmt_var(cfg, v, val, sizeof(val));
		cfg_fmt_var(def, v, dval, sizeof(dval));
		if (v->kind == CFG_STR) {
			/* Strings are printed whole, never cut to the buffer. */
			memcpy(&shown, cfg_cfield(cfg, v), sizeof(shown));
			if (!shown)
				shown = "";
		}
		const char *env = mark_env ? getenv(v->name) : NULL;
		if (fprintf(out, "%s=%s  # default %s%s\n", v->name, shown,
			    dval[0] ? dval : "(unset)",
			    env && env[0] ? "; set in the environment" : "") < 0)
			return FERRY_EIO;
	}
	return 0;
}

static int config_describe(const struct ferry_config *cfg, bool mark_env, FILE *out)
{
	struct ferry_config def;
	struct ferryi_config_ext xdef, x;
	int rc;

	if (!out)
		return FERRY_EINVAL;
	ferry_config_init(&def);
	ferryi_config_ext_init(&xdef);
	x = xdef;
	/* The extension has no struct field: a real config shows what the environment
	 * gives it (what a context would use); NULL shows the defaults. */
	if (cfg)
		(void)ferryi_config_ext_from_env(&x);
	else
		cfg = &def;
	rc = cfg_describe_vars(cfg, &def, cfg_vars, FERRYI_ARRAY_LEN(cfg_vars), mark_env, out);
	if (rc == 0)
		rc = cfg_describe_vars(&x, &xdef, cfg_ext_vars, FERRYI_ARRAY_LEN(cfg_ext_vars),
				       mark_env, out);
	return rc;
}

int ferryi_config_describe(const struct ferry_config *cfg, FILE *out)
{
	return config_describe(cfg, false, out);
}

int ferry_config_print(const struct ferry_config *cfg, FILE *out)
{
	struct ferry_config eff;

	if (!out)
		return FERRY_EINVAL;
	if (cfg)
		eff = *cfg;
	else
		ferry_config_init(&eff);
	int env_rc = ferry_config_from_env(&eff); /* as ferry_ctx_create() combines them */
	int rc = config_describe(&eff, true, out);
	return rc < 0 ? rc : env_rc;
}
