/*
 * ferry_info - what this ferry build can do on this machine.
 *
 *   ferry_info            version, providers (built? usable? devices or reason) and
 *                         the effective FERRY_* configuration
 *   ferry_info --usable   the names of the usable providers, one per line, in the
 *                         order the library lists them (for scripts)
 *
 * Uses the public API only (ferry.h): it shows what an application linked against
 * the same libferry would see. Creates no context, opens no connection.
 */
#include <ferry/ferry.h>

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ providers */

static int fi_list(struct ferry_provider_info **out)
{
	int cap = 8, n;
	struct ferry_provider_info *v = NULL;

	/* ferry_provider_list returns the full count even when it exceeds max. */
	for (;;) {
		struct ferry_provider_info *nv = realloc(v, (size_t)cap * sizeof(*v));
		if (!nv) {
			free(v);
			return -FERRY_ENOMEM;
		}
		v = nv;
		memset(v, 0, (size_t)cap * sizeof(*v));
		n = ferry_provider_list(v, cap);
		if (n < 0) {
			free(v);
			return n;
		}
		if (n <= cap)
			break;
		cap = n;
	}
	*out = v;
	return n;
}

static void fi_print_providers(const struct ferry_provider_info *p, int n)
{
	int i, first = 1;

	printf("providers built in:");
	for (i = 0; i < n; i++) {
		if (p[i].built) {
			printf("%s%s", first ? " " : ", ", p[i].name);
			first = 0;
		}
	}
	printf("%s\n\n", first ? " (none)" : "");

	printf("%-8s %-6s %-22s %s\n", "provider", "built", "usable", "detail");
	for (i = 0; i < n; i++) {
		char usable[40];

		if (p[i].status == 0)
			snprintf(usable, sizeof(usable), "yes");
		else
			snprintf(usable, sizeof(usable), "no (%s)", ferry_errname(p[i].status));
		printf("%-8s %-6s %-22s %s\n", p[i].name ? p[i].name : "?",
		       p[i].built ? "yes" : "no", usable,
		       p[i].detail[0] ? p[i].detail
				      : (p[i].status ? ferry_strerror(p[i].status) : "-"));
	}
}

/* ------------------------------------------------------------------ configuration */

enum fi_kind { FI_U32, FI_U64, FI_INT, FI_DBL, FI_STR, FI_LOG, FI_FALLBACK, FI_COMPRESS };

struct fi_field {
	const char *env;
	enum fi_kind kind;
	size_t off;
	const char *unit;
};

#define FI_F(name, k, field, u)                                                      \
	{ .env = (name), .kind = (k), .off = offsetof(struct ferry_config, field), .unit = (u) }

/* Every field of struct ferry_config that has a variable (event_fn/arg have none). */
static const struct fi_field fi_fields[] = {
	FI_F("FERRY_LOG", FI_LOG, log_level, ""),
	FI_F("FERRY_FALLBACK", FI_FALLBACK, fallback, ""),
	FI_F("FERRY_PROVIDERS", FI_STR, providers, ""),
	FI_F("FERRY_CONNECT_TIMEOUT_MS", FI_U32, connect_timeout_ms, "ms"),
	FI_F("FERRY_HANDSHAKE_TIMEOUT_MS", FI_U32, handshake_timeout_ms, "ms"),
	FI_F("FERRY_IDLE_TIMEOUT", FI_U32, idle_timeout_s, "s"),
	FI_F("FERRY_PROBE_INTERVAL_MS", FI_U32, probe_interval_ms, "ms"),
	FI_F("FERRY_PROBE_MISSES", FI_U32, probe_misses, ""),
	FI_F("FERRY_RECONNECT_INITIAL_MS", FI_U32, reconnect_initial_ms, "ms"),
	FI_F("FERRY_RECONNECT_MAX_MS", FI_U32, reconnect_max_ms, "ms"),
	FI_F("FERRY_RECONNECT_MULTIPLIER", FI_DBL, reconnect_multiplier, ""),
	FI_F("FERRY_RECONNECT_JITTER", FI_DBL, reconnect_jitter, ""),
	FI_F("FERRY_RECONNECT_ATTEMPTS", FI_U32, reconnect_attempts, ""),
	FI_F("FERRY_POOL_MAX", FI_U32, pool_max, ""),
	FI_F("FERRY_LISTEN_BACKLOG", FI_U32, listen_backlog, ""),
	FI_F("FERRY_MAX_ENDPOINTS", FI_U32, max_endpoints, ""),
	FI_F("FERRY_EAGER_MAX", FI_U64, eager_max, "bytes"),
	FI_F("FERRY_MAX_FRAME", FI_U64, max_frame, "bytes"),
	FI_F("FERRY_UNEXPECTED_MAX", FI_U64, unexpected_max, "bytes"),
	FI_F("FERRY_COMPRESS", FI_COMPRESS, compress, ""),
	FI_F("FERRY_COMPRESS_LEVEL", FI_INT, compress_level, ""),
	FI_F("FERRY_COMPRESS_MIN", FI_U64, compress_min, "bytes"),
	FI_F("FERRY_PROGRESS_THREAD", FI_INT, progress_thread, ""),
	FI_F("FERRY_CQ_SIZE", FI_U32, cq_size, "entries"),
};

static const char *fi_log_name(enum ferry_log_level l)
{
	switch (l) {
	case FERRY_LOG_OFF: return "off";
	case FERRY_LOG_ERROR: return "error";
	case FERRY_LOG_WARN: return "warn";
	case FERRY_LOG_INFO: return "info";
	case FERRY_LOG_DEBUG: return "debug";
	case FERRY_LOG_TRACE: return "trace";
	}
	return "?";
}

static const char *fi_fallback_name(enum ferry_fallback f)
{
	switch (f) {
	case FERRY_FALLBACK_PREFER: return "prefer";
	case FERRY_FALLBACK_REQUIRE: return "require";
	case FERRY_FALLBACK_TCP_ONLY: return "tcp";
	}
	return "?";
}

static const char *fi_compress_name(enum ferry_compress c)
{
	switch (c) {
	case FERRY_COMPRESS_OFF: return "off";
	case FERRY_COMPRESS_ON: return "on";
	case FERRY_COMPRESS_AUTO: return "auto";
	}
	return "?";
}

static void fi_format(const struct ferry_config *cfg, const struct fi_field *f, char *buf,
		      size_t len)
{
	const char *p = (const char *)cfg + f->off;

	switch (f->kind) {
	case FI_U32: {
		uint32_t v;
		memcpy(&v, p, sizeof(v));
		snprintf(buf, len, "%lu", (unsigned long)v);
		break;
	}
	case FI_U64: {
		/* Byte sizes with the largest exact K/M/G/T suffix, as FERRY_* accepts them. */
		static const char sfx[] = "KMGT";
		uint64_t v;
		int i = -1;

		memcpy(&v, p, sizeof(v));
		while (v != 0 && i < 3 && (v & 1023) == 0) {
			v >>= 10;
			i++;
		}
		if (i < 0)
			snprintf(buf, len, "%llu", (unsigned long long)v);
		else
			snprintf(buf, len, "%llu%c", (unsigned long long)v, sfx[i]);
		break;
	}
	case FI_INT: {
		int v;
		memcpy(&v, p, sizeof(v));
		snprintf(buf, len, "%d", v);
		break;
	}
	case FI_DBL: {
		double v;
		memcpy(&v, p, sizeof(v));
		snprintf(buf, len, "%g", v);
		break;
	}
	case FI_STR: {
		const char *v;
		memcpy(&v, p, sizeof(v));
		snprintf(buf, len, "%s", v ? v : "(all built in)");
		break;
	}
	case FI_LOG:
		snprintf(buf, len, "%s", fi_log_name(cfg->log_level));
		break;
	case FI_FALLBACK:
		snprintf(buf, len, "%s", fi_fallback_name(cfg->fallback));
		break;
	case FI_COMPRESS:
		snprintf(buf, len, "%s", fi_compress_name(cfg->compress));
		break;
	}
}

static int fi_print_config(void)
{
	struct ferry_config def, eff;
	size_t i;
	int rc;

	ferry_config_init(&def);
	ferry_config_init(&eff);
	rc = ferry_config_from_env(&eff);

	printf("\nconfiguration (defaults, overridden by FERRY_* variables):\n");
	for (i = 0; i < sizeof(fi_fields) / sizeof(fi_fields[0]); i++) {
		const struct fi_field *f = &fi_fields[i];
		char v[128], d[128], shown[160];

		fi_format(&eff, f, v, sizeof(v));
		fi_format(&def, f, d, sizeof(d));
		snprintf(shown, sizeof(shown), "%s%s%s", v, f->unit[0] ? " " : "", f->unit);
		if (getenv(f->env) && getenv(f->env)[0])
			printf("  %-28s %-20s set in the environment (default %s)\n", f->env, shown, d);
		else
			printf("  %-28s %s\n", f->env, shown);
	}
	if (rc < 0)
		printf("warning: a FERRY_* variable is malformed and was ignored: %s\n",
		       ferry_strerror(rc));
	return rc < 0 ? rc : 0;
}

/* ------------------------------------------------------------------ main */

static void fi_usage(FILE *out)
{
	fprintf(out,
		"usage: ferry_info [--usable | --help]\n"
		"  (no option)  version, providers and the effective FERRY_* configuration\n"
		"  --usable     names of the providers usable here, one per line\n");
}

int main(int argc, char **argv)
{
	struct ferry_provider_info *provs = NULL;
	int usable_only = 0, n, i, rc;

	for (i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--usable") == 0) {
			usable_only = 1;
		} else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
			fi_usage(stdout);
			return 0;
		} else {
			fprintf(stderr, "ferry_info: unknown argument '%s'\n", argv[i]);
			fi_usage(stderr);
			return 2;
		}
	}

	n = fi_list(&provs);
	if (n < 0) {
		fprintf(stderr, "ferry_info: ferry_provider_list: %s\n", ferry_strerror(n));
		return 1;
	}

	if (usable_only) {
		for (i = 0; i < n; i++)
			if (provs[i].built && provs[i].status == 0)
				printf("%s\n", provs[i].name);
		free(provs);
		return 0;
	}

	printf("ferry %s\n", ferry_version());
	fi_print_providers(provs, n);
	free(provs);
	rc = fi_print_config();
	/* A malformed variable is worth a non-zero exit: scripts should notice. */
	return rc < 0 ? 1 : 0;
}
