/* test_errors.c - ferry_strerror, ferry_errname and ferry_version. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "ferry/ferry.h"

#include <limits.h>
#include <stdio.h>
#include <string.h>

struct err_row {
	const char *name;
	int value;
	const char *text;
};

static const struct err_row rows[] = {
#define ROW_(name, value, text) {#name, (value), (text)},
	FERRY_ERRORS(ROW_)
#undef ROW_
};
#define NROWS (sizeof(rows) / sizeof(rows[0]))

static void test_every_code(void **state)
{
	(void)state;
	for (size_t i = 0; i < NROWS; i++) {
		assert_string_equal(ferry_errname(rows[i].value), rows[i].name);
		assert_string_equal(ferry_strerror(rows[i].value), rows[i].text);
		assert_true(rows[i].value <= 0);
	}
}

static void test_codes_distinct(void **state)
{
	(void)state;
	for (size_t i = 0; i < NROWS; i++)
		for (size_t j = i + 1; j < NROWS; j++) {
			assert_int_not_equal(rows[i].value, rows[j].value);
			assert_string_not_equal(rows[i].name, rows[j].name);
		}
}

static void test_errno_equivalence(void **state)
{
	(void)state;
	assert_int_equal(FERRY_ETIMEDOUT, -ETIMEDOUT);
	assert_int_equal(FERRY_EINVAL, -EINVAL);
	assert_int_equal(FERRY_ECONNREFUSED, -ECONNREFUSED);
	assert_int_equal(FERRY_EHOSTUNREACH, -EHOSTUNREACH);
	/* ferry's own codes stay clear of every errno */
	assert_true(FERRY_EBADKEY < -1000);
	assert_true(FERRY_EDRAINING < -1000);
}

static void test_positive_errno(void **state)
{
	(void)state;
	assert_string_equal(ferry_errname(ETIMEDOUT), "ETIMEDOUT");
	assert_string_equal(ferry_errname(EINVAL), "EINVAL");
	assert_string_equal(ferry_strerror(ECONNRESET), ferry_strerror(-ECONNRESET));
	for (size_t i = 0; i < NROWS; i++)
		assert_string_equal(ferry_errname(-rows[i].value), rows[i].name);
}

static void test_unknown(void **state)
{
	static const int unknown[] = {-1000, -1005, -99999, 99999, INT_MIN, INT_MAX, -ENOTBLK};
	(void)state;
	for (size_t i = 0; i < sizeof(unknown) / sizeof(unknown[0]); i++) {
		assert_string_equal(ferry_strerror(unknown[i]), "unknown error");
		assert_string_equal(ferry_errname(unknown[i]), "UNKNOWN");
	}
	assert_string_equal(ferry_errname(0), "OK");
	assert_string_equal(ferry_strerror(0), "success");
}

static void test_version(void **state)
{
	char want[32];
	(void)state;
	snprintf(want, sizeof(want), "%d.%d.%d", FERRY_VERSION_MAJOR, FERRY_VERSION_MINOR,
		 FERRY_VERSION_PATCH);
	assert_string_equal(ferry_version(), want);
	assert_string_equal(ferry_version(), "0.1.0");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_every_code),
		cmocka_unit_test(test_codes_distinct),
		cmocka_unit_test(test_errno_equivalence),
		cmocka_unit_test(test_positive_errno),
		cmocka_unit_test(test_unknown),
		cmocka_unit_test(test_version),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
