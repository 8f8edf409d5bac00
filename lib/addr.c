/*
 * addr.c - address URIs: "scheme://host:port", lists of them, and their socket form.
 *
 * Grammar (one URI, no blanks anywhere):
 *     uri    = scheme "://" host ":" port
 *     scheme = ALPHA *( ALPHA / DIGIT / "+" )     ; case-insensitive, stored lowercase
 *     host   = "[" IPv6 [ "%" zone ] "]" / IPv4 / name / "*"
 *     name   = 1*( ALPHA / DIGIT / "-" / "." / "_" )
 *     port   = 1*5DIGIT                             ; 0..65535
 * The parser stays generic: which schemes exist and whether a name must resolve is
 * the providers' business (ofi+shm names need not be IP hosts). A list is URIs
 * separated by commas, with optional blanks around each comma.
 */
#include "core.h"

#include <arpa/inet.h>
#include <net/if.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#define ADDR_PORT_DIGITS 5

static int addr_fail(const char *uri, const char *why)
{
	FERRYI_DBG(NULL, "address '%.*s': %s", FERRYI_URI_MAX, uri, why);
	return FERRY_EINVAL;
}

/* ASCII only: <ctype.h> would follow the application's locale. */
static bool addr_alpha(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool addr_digit(char c)
{
	return c >= '0' && c <= '9';
}

static bool addr_name_char(char c)
{
	return addr_alpha(c) || addr_digit(c) || c == '-' || c == '.' || c == '_';
}

/*
 * Bracketed IPv6 literal, optionally with a zone ("fe80::1%eth0"). Normalises the
 * address part to inet_ntop's form so that equal addresses give equal URIs (pool keys).
 */
static int addr_parse_v6(const char *s, size_t n, char *host, size_t hostsz)
{
	char tmp[INET6_ADDRSTRLEN + IF_NAMESIZE + 2];
	const char *zone;
	struct in6_addr a6;
	size_t alen;

	if (n == 0 || n >= sizeof(tmp))
		return -1;
	memcpy(tmp, s, n);
	tmp[n] = '\0';
	zone = memchr(tmp, '%', n);
	alen = zone ? (size_t)(zone - tmp) : n;
	if (zone) {
		if (zone[1] == '\0')
			return -1;
		for (const char *z = zone + 1; *z; z++)
			if (!addr_name_char(*z))
				return -1;
		tmp[alen] = '\0';
	}
	if (inet_pton(AF_INET6, tmp, &a6) != 1)
		return -1;
	if (!inet_ntop(AF_INET6, &a6, host, (socklen_t)hostsz))
		return -1;
	if (zone) {
		size_t hl = strlen(host);
		int w = snprintf(host + hl, hostsz - hl, "%%%s", zone + 1);
		if (w < 0 || (size_t)w >= hostsz - hl)
			return -1;
	}
	return 0;
}

int ferryi_addr_parse(const char *uri, struct ferryi_addr *out)
{
	struct ferryi_addr a;
	const char *p = uri, *h, *e;
	size_t n;
	unsigned long port = 0;
	int w;

	if (!uri || !out)
		return FERRY_EINVAL;
	memset(&a, 0, sizeof(a));

	/* scheme */
	if (!addr_alpha(*p))
		return addr_fail(uri, "scheme must start with a letter");
	for (n = 0; addr_alpha(p[n]) || addr_digit(p[n]) || p[n] == '+'; n++) {
		if (n + 1 >= sizeof(a.scheme))
			return addr_fail(uri, "scheme too long");
		a.scheme[n] = (p[n] >= 'A' && p[n] <= 'Z') ? (char)(p[n] - 'A' + 'a') : p[n];
	}
	if (strncmp(p + n, "://", 3) != 0)
		return addr_fail(uri, "expected scheme://host:port");
	p += n + 3;

	/* host */
	if (*p == '[') {
		h = p + 1;
		e = strchr(h, ']');
		if (!e)
			return addr_fail(uri, "unterminated [IPv6] host");
		if (addr_parse_v6(h, (size_t)(e - h), a.host, sizeof(a.host)) < 0)
			return addr_fail(uri, "bad IPv6 address in brackets");
		p = e + 1;
	} else if (p[0] == '*' && p[1] == ':') {
		a.host[0] = '*';
		p++;
	} else {
		bool numeric = true;
		for (n = 0; addr_name_char(p[n]); n++) {
			if (n + 1 >= sizeof(a.host))
				return addr_fail(uri, "host name too long");
			if (!addr_digit(p[n]) && p[n] != '.')
				numeric = false;
			a.host[n] = p[n];
		}
		if (n == 0)
			return addr_fail(uri, "empty or malformed host");
		if (numeric) {
			struct in_addr a4;
			/* All digits and dots: must be a strict dotted quad, not "10.1". */
			if (inet_pton(AF_INET, a.host, &a4) != 1)
				return addr_fail(uri, "bad IPv4 address");
		}
		p += n;
	}

	/* port */
	if (*p != ':')
		return addr_fail(uri, "expected ':port' after the host");
	p++;
	for (n = 0; addr_digit(p[n]); n++) {
		if (n >= ADDR_PORT_DIGITS)
			return addr_fail(uri, "port out of range");
		port = port * 10 + (unsigned long)(p[n] - '0');
	}
	if (n == 0)
		return addr_fail(uri, "missing port");
	if (port > 65535)
		return addr_fail(uri, "port out of range");
	if (p[n] != '\0')
		return addr_fail(uri, "junk after the port");
	a.port = (uint16_t)port;

	w = snprintf(a.uri, sizeof(a.uri), strchr(a.host, ':') ? "%s://[%s]:%u" : "%s://%s:%u",
		     a.scheme, a.host, (unsigned)a.port);
	if (w < 0 || (size_t)w >= sizeof(a.uri))
		return addr_fail(uri, "too long");
	*out = a;
	return 0;
}

static bool addr_blank(char c)
{
	return c == ' ' || c == '\t';
}

int ferryi_addr_parse_list(const char *uris, struct ferryi_addr *out, int max)
{
	const char *p = uris;
	int count = 0;

	if (!uris || !out || max <= 0)
		return FERRY_EINVAL;
	for (;;) {
		char one[FERRYI_URI_MAX + 64];
		const char *start, *end;
		size_t n;

		while (addr_blank(*p))
			p++;
		start = p;
		while (*p && *p != ',')
			p++;
		end = p;
		while (end > start && addr_blank(end[-1]))
			end--;
		n = (size_t)(end - start);
		if (n == 0)
			return addr_fail(uris, "empty element in address list");
		if (count >= max)
			return addr_fail(uris, "too many addresses in list");
		if (n >= sizeof(one))
			return addr_fail(uris, "address too long");
		memcpy(one, start, n);
		one[n] = '\0';
		if (ferryi_addr_parse(one, &out[count]) < 0)
			return FERRY_EINVAL; /* logged by the parser */
		count++;
		if (*p == '\0')
			return count;
		p++; /* the comma: another element must follow */
	}
}

static bool addr_is_wildcard_name(const char *host)
{
	return host[0] == '\0' || strcmp(host, "*") == 0;
}

int ferryi_addr_resolve(const struct ferryi_addr *a, int passive,
			struct sockaddr_storage *ss, unsigned *sslen)
{
	struct addrinfo hints, *res = NULL;
	char port[8];
	int rc;

	if (!a || !ss || !sslen)
		return FERRY_EINVAL;
	if (addr_is_wildcard_name(a->host)) {
		struct sockaddr_in *sin = (struct sockaddr_in *)ss;

		if (!passive) {
			FERRYI_DBG(NULL, "address '%s': cannot connect to a wildcard host", a->uri);
			return FERRY_EINVAL;
		}
		/* IPv4 any, as ferry_listener_addr reports it ("0.0.0.0"). */
		memset(ss, 0, sizeof(*ss));
		sin->sin_family = AF_INET;
		sin->sin_addr.s_addr = htonl(INADDR_ANY);
		sin->sin_port = htons(a->port);
		*sslen = sizeof(*sin);
		return 0;
	}

	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_NUMERICSERV | (passive ? AI_PASSIVE : 0);
	snprintf(port, sizeof(port), "%u", (unsigned)a->port);

	rc = getaddrinfo(a->host, port, &hints, &res);
	if (rc != 0) {
		FERRYI_INFO(NULL, "address '%s': cannot resolve '%s': %s", a->uri, a->host,
			    gai_strerror(rc));
		switch (rc) {
		case EAI_MEMORY:
			return FERRY_ENOMEM;
		case EAI_BADFLAGS:
		case EAI_SERVICE:
		case EAI_SOCKTYPE:
			return FERRY_EINVAL;
		default: /* EAI_NONAME, EAI_AGAIN, EAI_FAIL, EAI_NODATA, EAI_SYSTEM, ... */
			return FERRY_EHOSTUNREACH;
		}
	}
	if (!res || res->ai_addrlen > sizeof(*ss)) {
		freeaddrinfo(res);
		return FERRY_EHOSTUNREACH;
	}
	memset(ss, 0, sizeof(*ss));
	memcpy(ss, res->ai_addr, res->ai_addrlen);
	*sslen = (unsigned)res->ai_addrlen;
	freeaddrinfo(res);
	return 0;
}

int ferryi_addr_format(const char *scheme, const struct sockaddr_storage *ss, char *buf,
		       size_t len)
{
	char host[INET6_ADDRSTRLEN + IF_NAMESIZE + 2];
	unsigned port;
	bool v6 = false;
	int w;

	if (!scheme || !*scheme || !ss || !buf)
		return FERRY_EINVAL;
	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *sin = (const struct sockaddr_in *)ss;
		inet_ntop(AF_INET, &sin->sin_addr, host, sizeof(host));
		port = ntohs(sin->sin_port);
	} else if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)ss;
		port = ntohs(sin6->sin6_port);
		if (IN6_IS_ADDR_V4MAPPED(&sin6->sin6_addr)) {
			/* A v4 peer on a dual-stack socket: show it as the v4 address it is. */
			inet_ntop(AF_INET, &sin6->sin6_addr.s6_addr[12], host, sizeof(host));
		} else {
			v6 = true;
			inet_ntop(AF_INET6, &sin6->sin6_addr, host, sizeof(host));
			if (sin6->sin6_scope_id) {
				char ifname[IF_NAMESIZE];
				size_t hl = strlen(host);
				if (if_indextoname(sin6->sin6_scope_id, ifname))
					snprintf(host + hl, sizeof(host) - hl, "%%%s", ifname);
				else
					snprintf(host + hl, sizeof(host) - hl, "%%%u",
						 (unsigned)sin6->sin6_scope_id);
			}
		}
	} else {
		return FERRY_EINVAL;
	}
	w = snprintf(buf, len, v6 ? "%s://[%s]:%u" : "%s://%s:%u", scheme, host, port);
	if (w < 0 || (size_t)w >= len)
		return FERRY_ENOBUFS;
	return 0;
}
