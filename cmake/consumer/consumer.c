/*
 * consumer.c - the smallest program that uses an installed ferry: prints the version
 * and creates and destroys a context restricted to TCP. Built by build.consumer with
 * pkg-config and with find_package(ferry), against the installed files only.
 */
#include <ferry/ferry.h>

#include <stdio.h>
#include <string.h>

int main(void)
{
	char want[32];
	struct ferry_config cfg;
	struct ferry_ctx *ctx = NULL;
	int rc;

	snprintf(want, sizeof(want), "%d.%d.%d", FERRY_VERSION_MAJOR, FERRY_VERSION_MINOR,
		 FERRY_VERSION_PATCH);
	if (strcmp(ferry_version(), want) != 0) {
		fprintf(stderr, "consumer: library %s, header %s\n", ferry_version(), want);
		return 1;
	}
	ferry_config_init(&cfg);
	cfg.providers = "tcp";
	rc = ferry_ctx_create(&cfg, &ctx);
	if (rc != 0) {
		fprintf(stderr, "consumer: ferry_ctx_create: %s\n", ferry_strerror(rc));
		return 1;
	}
	ferry_ctx_destroy(ctx);
	printf("consumer: ferry %s ok\n", ferry_version());
	return 0;
}
