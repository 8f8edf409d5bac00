/*
 * fuzz_addr.c - address URIs: ferryi_addr_parse, ferryi_addr_parse_list, and the way
 * back (ferryi_addr_resolve + ferryi_addr_format) for numeric hosts.
 *
 * Input: the text of a URI or a comma-separated list (up to the first NUL byte).
 *
 * Invariants beyond "no crash":
 *   - a parsed address is well formed: lowercase scheme starting with a letter, a
 *     non-empty host, a normalised URI that fits;
 *   - the normalised URI parses again to exactly the same address (it is a fixed
 *     point, which the pool relies on: equal addresses give equal keys);
 *   - one URI that parses is also a list of one with the same address;
 *   - a list that parses has 1..max elements, each a fixed point, and the list made
 *     of their normalised URIs parses to the same elements;
 *   - numeric hosts (no zone, not v4-mapped) resolve without DNS, and formatting the
 *     resolved socket address gives back the normalised URI.
 * Names are never resolved here: that would ask DNS and make runs slow and flaky.
 */
#include "fuzz_common.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define LIST_MAX 8

static bool addr_same(const struct ferryi_addr *a, const struct ferryi_addr *b)
{
	return strcmp(a->scheme, b->scheme) == 0 && strcmp(a->host, b->host) == 0 &&
	       a->port == b->port && strcmp(a->uri, b->uri) == 0;
}

static void check_well_formed(const struct ferryi_addr *a)
{
	FZ_CHECK(memchr(a->scheme, '\0', sizeof(a->scheme)) != NULL);
	FZ_CHECK(memchr(a->host, '\0', sizeof(a->host)) != NULL);
	FZ_CHECK(memchr(a->uri, '\0', sizeof(a->uri)) != NULL);
	FZ_CHECK(a->scheme[0] >= 'a' && a->scheme[0] <= 'z');
	for (const char *p = a->scheme; *p; p++)
		FZ_CHECK((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '+');
	FZ_CHECK(a->host[0] != '\0');
	FZ_CHECK(strstr(a->uri, "://") == a->uri + strlen(a->scheme));
}

static void check_fixed_point(const struct ferryi_addr *a)
{
	struct ferryi_addr again;

	check_well_formed(a);
	if (ferryi_addr_parse(a->uri, &again) != 0)
		fz_fail(__FILE__, __LINE__, "normalised URI '%s' does not parse", a->uri);
	if (!addr_same(a, &again))
		fz_fail(__FILE__, __LINE__, "'%s' reparses as '%s' (host '%s' vs '%s')",
			a->uri, again.uri, a->host, again.host);
}

/* Numeric hosts only: resolve (no DNS for numbers) and format back. */
static void check_roundtrip(const struct ferryi_addr *a)
{
	struct in6_addr a6;
	struct in_addr a4;
	struct sockaddr_storage ss;
	unsigned sslen = sizeof(ss);
	char buf[FERRYI_URI_MAX];
	bool v4 = inet_pton(AF_INET, a->host, &a4) == 1;
	bool v6 = !v4 && inet_pton(AF_INET6, a->host, &a6) == 1;

	if (strcmp(a->host, "*") == 0) {
		FZ_CHECK(ferryi_addr_resolve(a, 1, &ss, &sslen) == 0);
		FZ_CHECK(ss.ss_family == AF_INET);
		FZ_CHECK(ferryi_addr_resolve(a, 0, &ss, &sslen) == FERRY_EINVAL);
		return;
	}
	/* v4-mapped v6 addresses are shown as v4 on purpose; zones need interfaces. */
	if (!v4 && !(v6 && !IN6_IS_ADDR_V4MAPPED(&a6)))
		return;
	int rc = ferryi_addr_resolve(a, 0, &ss, &sslen);
	if (rc != 0)
		fz_fail(__FILE__, __LINE__, "numeric '%s' does not resolve: %s", a->uri,
			ferry_strerror(rc));
	FZ_CHECK(ss.ss_family == (v4 ? AF_INET : AF_INET6));
	FZ_CHECK(ferryi_addr_format(a->scheme, &ss, buf, sizeof(buf)) == 0);
	if (strcmp(buf, a->uri) != 0)
		fz_fail(__FILE__, __LINE__, "'%s' resolves and formats as '%s'", a->uri, buf);
	/* Too small a buffer is refused, never overrun. */
	FZ_CHECK(ferryi_addr_format(a->scheme, &ss, buf, strlen(a->uri)) == FERRY_ENOBUFS);
}

static void check_list(const char *s, int max)
{
	struct ferryi_addr *list = calloc((size_t)max, sizeof(*list));
	struct ferryi_addr *again = calloc((size_t)max, sizeof(*again));
	char *joined = malloc((size_t)max * (FERRYI_URI_MAX + 2));
	size_t off = 0;

	FZ_CHECK(list && again && joined);
	int n = ferryi_addr_parse_list(s, list, max);
	if (n < 0) {
		FZ_CHECK(n == FERRY_EINVAL);
		goto out;
	}
	FZ_CHECK(n >= 1 && n <= max);
	joined[0] = '\0';
	for (int i = 0; i < n; i++) {
		check_fixed_point(&list[i]);
		off += (size_t)sprintf(joined + off, "%s%s", i ? ", " : "", list[i].uri);
	}
	if (ferryi_addr_parse_list(joined, again, max) != n)
		fz_fail(__FILE__, __LINE__, "list of normalised URIs '%s' does not parse", joined);
	for (int i = 0; i < n; i++)
		FZ_CHECK(addr_same(&list[i], &again[i]));
out:
	free(list);
	free(again);
	free(joined);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ferryi_addr a, one;
	char *s;

	/* Exactly the string, NUL-terminated, in its own block: ASan sees overreads. */
	size_t n = strnlen((const char *)data, size);
	s = malloc(n + 1);
	FZ_CHECK(s != NULL);
	memcpy(s, data, n);
	s[n] = '\0';

	memset(&a, 0, sizeof(a));
	int rc = ferryi_addr_parse(s, &a);
	FZ_CHECK(rc == 0 || rc == FERRY_EINVAL);
	if (rc == 0) {
		check_fixed_point(&a);
		check_roundtrip(&a);
		FZ_CHECK(ferryi_addr_parse_list(s, &one, 1) == 1);
		FZ_CHECK(addr_same(&a, &one));
	}
	check_list(s, LIST_MAX);
	check_list(s, 1);
	free(s);
	return 0;
}
