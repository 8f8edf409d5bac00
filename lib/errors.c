/*
 * errors.c - error names and descriptions, generated from FERRY_ERRORS in ferry.h so
 * that the codes, ferry_strerror() and ferry_errname() can never disagree.
 */
#include "ferry/ferry.h"

#include <limits.h>

#define ERR_STR_(x) #x
#define ERR_XSTR_(x) ERR_STR_(x)

const char *ferry_version(void)
{
	return ERR_XSTR_(FERRY_VERSION_MAJOR) "." ERR_XSTR_(FERRY_VERSION_MINOR) "." ERR_XSTR_(
		FERRY_VERSION_PATCH);
}

/*
 * Users pass errno values straight from their own system calls, so a positive code is
 * read as an errno. INT_MIN has no positive counterpart and stays unknown.
 */
static int err_normalise(int err)
{
	return (err > 0 && err != INT_MIN) ? -err : err;
}

const char *ferry_strerror(int err)
{
	switch (err_normalise(err)) {
#define ERR_TEXT_(name, value, text)                                                 \
	case (value):                                                                \
		return (text);
		FERRY_ERRORS(ERR_TEXT_)
#undef ERR_TEXT_
	default:
		return "unknown error";
	}
}

const char *ferry_errname(int err)
{
	switch (err_normalise(err)) {
#define ERR_NAME_(name, value, text)                                                 \
	case (value):                                                                \
		return #name;
		FERRY_ERRORS(ERR_NAME_)
#undef ERR_NAME_
	default:
		return "UNKNOWN";
	}
}
