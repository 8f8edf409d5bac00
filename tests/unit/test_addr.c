/* test_addr.c - URI parsing, lists, resolution and formatting. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

static void expect_ok(const char *uri, const char *scheme, const char *host, unsigned port,
		      const char *norm)
{
	struct ferryi_addr a;
	int rc = ferryi_addr_parse(uri, &a);

	if (rc != 0)
		fail_msg("'%s' refused (%d)", uri, rc);
	assert_string_equal(a.scheme, scheme);
	assert_string_equal(a.host, host);
	assert_int_equal(a.port, port);
	assert_string_equal(a.uri, norm);
	/* the normal form parses to itself */
	struct ferryi_addr b;
	assert_int_equal(ferryi_addr_parse(a.uri, &b), 0);
	assert_memory_equal(&a, &b, sizeof(a));
}

static void test_parse_valid(void **state)
{
	(void)state;
	expect_ok("tcp://127.0.0.1:80", "tcp", "127.0.0.1", 80, "tcp://127.0.0.1:80");
	expect_ok("verbs://10.0.0.1:4791", "verbs", "10.0.0.1", 4791, "verbs://10.0.0.1:4791");
	expect_ok("ofi+tcp://node-1.example.com:0", "ofi+tcp", "node-1.example.com", 0,
		  "ofi+tcp://node-1.example.com:0");
	expect_ok("ofi+shm://my_node:65535", "ofi+shm", "my_node", 65535,
		  "ofi+shm://my_node:65535");
	expect_ok("auto://localhost:1", "auto", "localhost", 1, "auto://localhost:1");
	expect_ok("tcp://[::1]:80", "tcp", "::1", 80, "tcp://[::1]:80");
	expect_ok("tcp://[::]:0", "tcp", "::", 0, "tcp://[::]:0");
	expect_ok("tcp://[0:0:0:0:0:0:0:1]:80", "tcp", "::1", 80, "tcp://[::1]:80");
	expect_ok("tcp://[FE80::0:1%eth0]:7", "tcp", "fe80::1%eth0", 7, "tcp://[fe80::1%eth0]:7");
	expect_ok("tcp://[::ffff:10.1.2.3]:9", "tcp", "::ffff:10.1.2.3", 9,
		  "tcp://[::ffff:10.1.2.3]:9");
	expect_ok("TCP://Host:1", "tcp", "Host", 1, "tcp://Host:1");
	expect_ok("tcp://*:0", "tcp", "*", 0, "tcp://*:0");
	expect_ok("tcp://0.0.0.0:00080", "tcp", "0.0.0.0", 80, "tcp://0.0.0.0:80");
	expect_ok("x1+y2://a:5", "x1+y2", "a", 5, "x1+y2://a:5");
	expect_ok("tcp://1.2.3.4.example:5", "tcp", "1.2.3.4.example", 5,
		  "tcp://1.2.3.4.example:5");

	/* the longest host and scheme that fit */
	char uri[600], host[256], scheme[32];
	memset(host, 'h', 255);
	host[255] = '\0';
	memset(scheme, 's', 31);
	scheme[31] = '\0';
	snprintf(uri, sizeof(uri), "%s://%s:65535", scheme, host);
	expect_ok(uri, scheme, host, 65535, uri);
}

static void test_parse_invalid(void **state)
{
	static const char *const bad[] = {
		"",
		"tcp",
		"tcp:",
		"tcp://",
		"tcp:/h:1",
		"tcp//h:1",
		"tcp:h:1",
		"://h:1",
		"1tcp://h:1",
		"+tcp://h:1",
		"t_cp://h:1",
		"t-cp://h:1",
		"tcp://:80",
		"tcp://h",
		"tcp://h:",
		"tcp://h:65536",
		"tcp://h:99999",
		"tcp://h:123456",
		"tcp://h:-1",
		"tcp://h:+1",
		"tcp://h:80x",
		"tcp://h:80/",
		"tcp://h:80/path",
		"tcp://h:80 ",
		" tcp://h:80",
		"tcp ://h:80",
		"tcp://h h:80",
		"tcp://h: 80",
		"tcp://h\t:80",
		"tcp://h:1,tcp://h:2",
		"tcp://::1:80",
		"tcp://[::1:80",
		"tcp://[::1]80",
		"tcp://[::1]",
		"tcp://[]:80",
		"tcp://[zz::1]:80",
		"tcp://[1.2.3.4]:80",
		"tcp://[fe80::1%]:1",
		"tcp://[fe80::1%et h]:1",
		"tcp://[fe80::1%eth/0]:1",
		"tcp://1.2.3:80",
		"tcp://256.1.1.1:80",
		"tcp://01.2.3.4:80",
		"tcp://1.2.3.4.:80",
		"tcp://h/x:80",
		"tcp://user@h:80",
		"tcp://*x:80",
		"tcp://**:80",
		"tcp://h\xc3\xa9:80",
		"tcp://h:\xd9\xa1",
	};
	struct ferryi_addr a;
	(void)state;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (ferryi_addr_parse(bad[i], &a) != FERRY_EINVAL)
			fail_msg("'%s' accepted", bad[i]);
	assert_int_equal(ferryi_addr_parse(NULL, &a), FERRY_EINVAL);
	assert_int_equal(ferryi_addr_parse("tcp://h:1", NULL), FERRY_EINVAL);

	/* one character too long: host 256, scheme 32 */
	char uri[600], host[257], scheme[33];
	memset(host, 'h', 256);
	host[256] = '\0';
	snprintf(uri, sizeof(uri), "tcp://%s:1", host);
	assert_int_equal(ferryi_addr_parse(uri, &a), FERRY_EINVAL);
	memset(scheme, 's', 32);
	scheme[32] = '\0';
	snprintf(uri, sizeof(uri), "%s://h:1", scheme);
	assert_int_equal(ferryi_addr_parse(uri, &a), FERRY_EINVAL);
}

/* A refused URI leaves the output untouched. */
static void test_parse_failure_keeps_output(void **state)
{
	struct ferryi_addr a, b;
	(void)state;

	assert_int_equal(ferryi_addr_parse("tcp://keep:1", &a), 0);
	b = a;
	assert_int_equal(ferryi_addr_parse("tcp://other:99999", &a), FERRY_EINVAL);
	assert_memory_equal(&a, &b, sizeof(a));
}

static void test_parse_list(void **state)
{
	struct ferryi_addr v[4];
	(void)state;

	assert_int_equal(ferryi_addr_parse_list("tcp://a:1", v, 4), 1);
	assert_string_equal(v[0].uri, "tcp://a:1");

	assert_int_equal(ferryi_addr_parse_list("verbs://10.0.0.1:4791,tcp://10.0.0.1:4791", v, 4), 2);
	assert_string_equal(v[0].scheme, "verbs");
	assert_string_equal(v[1].scheme, "tcp");

	assert_int_equal(ferryi_addr_parse_list("  tcp://a:1 ,\tverbs://[::1]:2 ,ofi+shm://n:3  ",
						v, 4),
			 3);
	assert_string_equal(v[0].uri, "tcp://a:1");
	assert_string_equal(v[1].uri, "verbs://[::1]:2");
	assert_string_equal(v[2].uri, "ofi+shm://n:3");

	assert_int_equal(ferryi_addr_parse_list("tcp://a:1,tcp://b:2,tcp://c:3", v, 3), 3);
	assert_int_equal(ferryi_addr_parse_list("tcp://a:1,tcp://b:2,tcp://c:3", v, 2),
			 FERRY_EINVAL);
	assert_int_equal(ferryi_addr_parse_list("tcp://a:1", v, 0), FERRY_EINVAL);

	static const char *const bad[] = {
		"",
		" ",
		",",
		"tcp://a:1,",
		"tcp://a:1, ",
		",tcp://a:1",
		"tcp://a:1,,tcp://b:2",
		"tcp://a:1, ,tcp://b:2",
		"tcp://a:1 tcp://b:2",
		"tcp://a:1;tcp://b:2",
		"tcp://a:1,tcp://b",
		"tcp://a :1,tcp://b:2",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (ferryi_addr_parse_list(bad[i], v, 4) != FERRY_EINVAL)
			fail_msg("list '%s' accepted", bad[i]);
	assert_int_equal(ferryi_addr_parse_list(NULL, v, 4), FERRY_EINVAL);
}

/* ------------------------------------------------------------------ resolve */

static int resolve(const char *uri, int passive, struct sockaddr_storage *ss, unsigned *len)
{
	struct ferryi_addr a;

	assert_int_equal(ferryi_addr_parse(uri, &a), 0);
	memset(ss, 0xee, sizeof(*ss));
	return ferryi_addr_resolve(&a, passive, ss, len);
}

static void test_resolve_numeric(void **state)
{
	struct sockaddr_storage ss;
	unsigned len = 0;
	(void)state;

	assert_int_equal(resolve("tcp://127.0.0.1:4791", 0, &ss, &len), 0);
	assert_int_equal(ss.ss_family, AF_INET);
	assert_int_equal(len, sizeof(struct sockaddr_in));
	const struct sockaddr_in *sin = (const struct sockaddr_in *)&ss;
	assert_int_equal(ntohs(sin->sin_port), 4791);
	assert_int_equal(ntohl(sin->sin_addr.s_addr), INADDR_LOOPBACK);

	assert_int_equal(resolve("tcp://[::1]:443", 0, &ss, &len), 0);
	assert_int_equal(ss.ss_family, AF_INET6);
	assert_int_equal(len, sizeof(struct sockaddr_in6));
	const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)&ss;
	assert_int_equal(ntohs(sin6->sin6_port), 443);
	assert_true(IN6_IS_ADDR_LOOPBACK(&sin6->sin6_addr));
}

static void test_resolve_localhost(void **state)
{
	struct sockaddr_storage ss;
	unsigned len = 0;
	(void)state;

	assert_int_equal(resolve("tcp://localhost:7000", 0, &ss, &len), 0);
	if (ss.ss_family == AF_INET) {
		const struct sockaddr_in *sin = (const struct sockaddr_in *)&ss;
		assert_int_equal(ntohl(sin->sin_addr.s_addr) >> 24, 127);
		assert_int_equal(ntohs(sin->sin_port), 7000);
	} else {
		const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)&ss;
		assert_int_equal(ss.ss_family, AF_INET6);
		assert_true(IN6_IS_ADDR_LOOPBACK(&sin6->sin6_addr));
		assert_int_equal(ntohs(sin6->sin6_port), 7000);
	}
}

static void test_resolve_unknown_name(void **state)
{
	struct sockaddr_storage ss;
	unsigned len = 0;
	(void)state;

	/* .invalid is reserved (RFC 2606): it never resolves. */
	assert_int_equal(resolve("tcp://nonexistent.invalid:1", 0, &ss, &len),
			 FERRY_EHOSTUNREACH);
}

static void test_resolve_passive(void **state)
{
	struct sockaddr_storage ss;
	unsigned len = 0;
	struct ferryi_addr a;
	(void)state;

	static const char *const v4any[] = {"tcp://*:5000", "tcp://0.0.0.0:5000"};
	for (size_t i = 0; i < 2; i++) {
		assert_int_equal(resolve(v4any[i], 1, &ss, &len), 0);
		const struct sockaddr_in *sin = (const struct sockaddr_in *)&ss;
		assert_int_equal(ss.ss_family, AF_INET);
		assert_int_equal(sin->sin_addr.s_addr, htonl(INADDR_ANY));
		assert_int_equal(ntohs(sin->sin_port), 5000);
	}
	assert_int_equal(resolve("tcp://[::]:0", 1, &ss, &len), 0);
	assert_int_equal(ss.ss_family, AF_INET6);
	assert_true(IN6_IS_ADDR_UNSPECIFIED(&((const struct sockaddr_in6 *)&ss)->sin6_addr));

	/* an empty host (built by hand, the parser refuses it) is a wildcard too */
	memset(&a, 0, sizeof(a));
	strcpy(a.scheme, "tcp");
	a.port = 6000;
	assert_int_equal(ferryi_addr_resolve(&a, 1, &ss, &len), 0);
	assert_int_equal(ss.ss_family, AF_INET);
	assert_int_equal(ntohs(((const struct sockaddr_in *)&ss)->sin_port), 6000);
	/* but nobody can connect to a wildcard */
	assert_int_equal(ferryi_addr_resolve(&a, 0, &ss, &len), FERRY_EINVAL);
	assert_int_equal(resolve("tcp://*:5000", 0, &ss, &len), FERRY_EINVAL);
	assert_int_equal(ferryi_addr_resolve(NULL, 0, &ss, &len), FERRY_EINVAL);
}

/* ------------------------------------------------------------------ format */

static void test_format(void **state)
{
	struct sockaddr_storage ss;
	unsigned len = 0;
	char buf[FERRYI_URI_MAX];
	(void)state;

	static const char *const round[] = {
		"tcp://127.0.0.1:4791", "verbs://10.0.0.1:1", "tcp://[::1]:443",
		"ofi+tcp://[2001:db8::5]:65535", "tcp://0.0.0.0:0",
	};
	for (size_t i = 0; i < sizeof(round) / sizeof(round[0]); i++) {
		struct ferryi_addr a;
		assert_int_equal(ferryi_addr_parse(round[i], &a), 0);
		assert_int_equal(ferryi_addr_resolve(&a, 0, &ss, &len), 0);
		assert_int_equal(ferryi_addr_format(a.scheme, &ss, buf, sizeof(buf)), 0);
		assert_string_equal(buf, round[i]);
	}

	/* v4-mapped peers of dual-stack sockets print as plain IPv4 */
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
	memset(&ss, 0, sizeof(ss));
	sin6->sin6_family = AF_INET6;
	sin6->sin6_port = htons(99);
	assert_int_equal(inet_pton(AF_INET6, "::ffff:192.168.1.2", &sin6->sin6_addr), 1);
	assert_int_equal(ferryi_addr_format("tcp", &ss, buf, sizeof(buf)), 0);
	assert_string_equal(buf, "tcp://192.168.1.2:99");

	/* a scope id that names no interface prints numerically, and parses back */
	assert_int_equal(inet_pton(AF_INET6, "fe80::1", &sin6->sin6_addr), 1);
	sin6->sin6_scope_id = 999999;
	assert_int_equal(ferryi_addr_format("tcp", &ss, buf, sizeof(buf)), 0);
	assert_string_equal(buf, "tcp://[fe80::1%999999]:99");
	struct ferryi_addr a;
	assert_int_equal(ferryi_addr_parse(buf, &a), 0);
	assert_string_equal(a.uri, buf);

	/* buffer limits: exact fit works, one byte less does not */
	assert_int_equal(resolve("tcp://127.0.0.1:80", 0, &ss, &len), 0);
	assert_int_equal(ferryi_addr_format("tcp", &ss, buf, strlen("tcp://127.0.0.1:80") + 1), 0);
	assert_int_equal(ferryi_addr_format("tcp", &ss, buf, strlen("tcp://127.0.0.1:80")),
			 FERRY_ENOBUFS);

	ss.ss_family = AF_UNIX;
	assert_int_equal(ferryi_addr_format("tcp", &ss, buf, sizeof(buf)), FERRY_EINVAL);
	ss.ss_family = AF_INET;
	assert_int_equal(ferryi_addr_format("", &ss, buf, sizeof(buf)), FERRY_EINVAL);
	assert_int_equal(ferryi_addr_format(NULL, &ss, buf, sizeof(buf)), FERRY_EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_valid),
		cmocka_unit_test(test_parse_invalid),
		cmocka_unit_test(test_parse_failure_keeps_output),
		cmocka_unit_test(test_parse_list),
		cmocka_unit_test(test_resolve_numeric),
		cmocka_unit_test(test_resolve_localhost),
		cmocka_unit_test(test_resolve_unknown_name),
		cmocka_unit_test(test_resolve_passive),
		cmocka_unit_test(test_format),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
