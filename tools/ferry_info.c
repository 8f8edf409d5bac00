/*
 * ferry_info - what this ferry build can do on this machine.
 *
 *   ferry_info            version, providers (built? usable? devices or reason) and
 *                         the effective core configuration (ferry_config_print)
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

static int fi_print_config(void)
{
	printf("\nconfiguration (defaults, overridden by FERRY_* variables; provider "
	       "tunables in the README):\n");
	fflush(stdout);
	int rc = ferry_config_print(NULL, stdout);
	if (rc == FERRY_EINVAL)
		printf("warning: a FERRY_* variable is malformed and was ignored (see the "
		       "log line above)\n");
	return rc;
}

/* ------------------------------------------------------------------ main */

static void fi_usage(FILE *out)
{
	fprintf(out,
		"usage: ferry_info [--usable | --help]\n"
		"  (no option)  version, providers and the effective core configuration\n"
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
