/*
 * ferry_health - liveness probe for a ferry listener, for container health checks.
 *
 *   ferry_health [-t TIMEOUT_MS] URI[,URI...]
 *
 * Connects (a private endpoint, one attempt per URI) and reports the peer's health:
 *   exit 0  SERVING   the peer accepted the endpoint
 *   exit 2  DRAINING  the peer refused it because it is draining (ferry_ctx_drain)
 *   exit 1  DOWN      anything else, with the reason
 */
#include <ferry/ferry.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int usage(void)
{
	fprintf(stderr, "usage: ferry_health [-t TIMEOUT_MS] URI[,URI...]\n");
	return 64;
}

int main(int argc, char **argv)
{
	int timeout_ms = 3000;
	const char *uri = NULL;
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "-t") == 0 && i + 1 < argc)
			timeout_ms = atoi(argv[++i]);
		else if (argv[i][0] == '-')
			return usage();
		else
			uri = argv[i];
	}
	if (!uri || timeout_ms <= 0)
		return usage();

	struct ferry_config cfg;
	ferry_config_init(&cfg);
	cfg.log_level = FERRY_LOG_ERROR;
	cfg.reconnect_attempts = 1;
	cfg.connect_timeout_ms = (uint32_t)timeout_ms;
	cfg.handshake_timeout_ms = (uint32_t)timeout_ms;
	struct ferry_ctx *ctx;
	int rc = ferry_ctx_create(&cfg, &ctx);
	if (rc < 0) {
		printf("DOWN %s: cannot create a context: %s\n", uri, ferry_strerror(rc));
		return 1;
	}
	struct ferry_connect_attr attr = { .flags = FERRY_CONNECT_PRIVATE, .timeout_ms = timeout_ms };
	struct ferry_ep *ep = NULL;
	rc = ferry_connect(ctx, uri, &attr, &ep);
	int code;
	if (rc == 0) {
		printf("SERVING %s (%s)\n", ferry_ep_peer(ep), ferry_ep_provider(ep));
		ferry_ep_close(ep);
		code = 0;
	} else if (rc == FERRY_EDRAINING) {
		printf("DRAINING %s\n", uri);
		code = 2;
	} else {
		printf("DOWN %s: %s (%s)\n", uri, ferry_strerror(rc), ferry_errname(rc));
		code = 1;
	}
	ferry_ctx_destroy(ctx);
	return code;
}
