/*
 * ofi_library.c - libfabric is opened when the ofi provider is first used, not linked
 * (providers/ofi/ofi_lib.c). libfabric is opened once per process, so each case is a
 * run of its own (CTest conf.ofi.library.<case>):
 *
 *   unused   a context restricted to tcp, then one with every provider allowed: TCP
 *            messages (eager and rendezvous) and a registered region never map
 *            libfabric; ferry_provider_list(), which asks the ofi provider, then does
 *   used     default providers: the ofi instance opens at its first use, not with the
 *            context: an rkey packed for the user (it must work over any provider)
 *            or an ofi+ URI. Regions registered before are then registered with it
 *            and written over ofi+tcp; the application's signal handlers are still
 *            its own afterwards (Debian's libfabric loads a library that installs
 *            its own)
 *   missing  FERRY_OFI_LIBRARY names no file: contexts work without ofi, the
 *            provider list says why, ofi+tcp:// listen and connect fail with
 *            FERRY_EPROTONOSUPPORT, and a warning names the variable
 *   wrong    FERRY_OFI_LIBRARY names a library that is not libfabric: the same, and
 *            the reason names the function it lacks
 */
#define _GNU_SOURCE
#include <ferry/ferry.h>

#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define FAIL(...)                                                                    \
	do {                                                                         \
		fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                 \
		fprintf(stderr, __VA_ARGS__);                                        \
		fprintf(stderr, "\n");                                               \
		exit(1);                                                             \
	} while (0)

#define CHECK(call)                                                                  \
	do {                                                                         \
		int rc_ = (call);                                                    \
		if (rc_ < 0)                                                         \
			FAIL("%s: %s", #call, ferry_strerror(rc_));                  \
	} while (0)

static bool libfabric_mapped(void)
{
	FILE *f = fopen("/proc/self/maps", "r");
	char line[4096];
	bool found = false;

	if (!f)
		FAIL("/proc/self/maps: cannot open");
	while (!found && fgets(line, sizeof(line), f))
		found = strstr(line, "/libfabric.so") != NULL;
	fclose(f);
	return found;
}

static struct ferry_provider_info ofi_info(void)
{
	struct ferry_provider_info all[8];
	int n = ferry_provider_list(all, 8);

	for (int i = 0; i < n && i < 8; i++)
		if (strcmp(all[i].name, "ofi") == 0)
			return all[i];
	FAIL("ferry_provider_list: no entry for ofi");
}

static void wait_one(struct ferry_ctx *ctx, const char *what)
{
	struct ferry_completion c;
	int n = ferry_cq_wait(ferry_ctx_cq(ctx), &c, 1, 10000);

	if (n != 1 || c.status != 0)
		FAIL("%s: %s", what, n < 0 ? ferry_strerror(n) :
			 n == 0 ? "no completion in 10 s" : ferry_strerror(c.status));
}

/* Connects ctx to a listener of its own on uri; *l, *cep (client), *sep (server). */
static void self_connect(struct ferry_ctx *ctx, const char *uri, struct ferry_listener **l,
			 struct ferry_ep **cep, struct ferry_ep **sep)
{
	char addr[512];
	size_t len = sizeof(addr);

	CHECK(ferry_listen(ctx, uri, NULL, l));
	CHECK(ferry_listener_addr(*l, addr, &len));
	CHECK(ferry_connect(ctx, addr, NULL, cep));
	CHECK(ferry_listener_accept(*l, sep, 10000));
}

/* Over TCP to the same context: a small message, and one big enough for rendezvous
 * (whose announce carries a key of the region behind it). */
static void tcp_message(struct ferry_ctx *ctx)
{
	enum { BIG = 4 << 20 };
	struct ferry_listener *l;
	struct ferry_ep *cep, *sep;
	char got[16] = "";
	char *big = malloc(BIG), *big_got = calloc(1, BIG);

	if (!big || !big_got)
		FAIL("out of memory");
	memset(big, 0x5a, BIG);
	self_connect(ctx, "tcp://127.0.0.1:0", &l, &cep, &sep);
	CHECK(ferry_recv(sep, got, sizeof(got), 7, ~(uint64_t)0, NULL, NULL));
	CHECK(ferry_recv(sep, big_got, BIG, 8, ~(uint64_t)0, NULL, NULL));
	CHECK(ferry_send(cep, "ferry", 6, 7, NULL, NULL));
	CHECK(ferry_send(cep, big, BIG, 8, NULL, NULL));
	for (int i = 0; i < 4; i++)
		wait_one(ctx, "send or recv");
	if (strcmp(got, "ferry") != 0 || memcmp(big, big_got, BIG) != 0)
		FAIL("received \"%s\" and %d MiB not as sent", got, BIG >> 20);
	ferry_ep_close(cep);
	ferry_ep_close(sep);
	ferry_listener_close(l);
	free(big);
	free(big_got);
}

static void case_unused(void)
{
	struct ferry_config cfg;
	struct ferry_ctx *ctx;
	struct ferry_mr *mr;
	static char region[4096];

	ferry_config_init(&cfg);
	cfg.providers = "tcp";
	CHECK(ferry_ctx_create(&cfg, &ctx));
	tcp_message(ctx);
	ferry_ctx_destroy(ctx);
	if (libfabric_mapped())
		FAIL("libfabric is mapped in a process whose contexts only allow tcp");
	CHECK(ferry_ctx_create(NULL, &ctx));
	CHECK(ferry_mr_reg(ctx, region, sizeof(region), FERRY_ACCESS_REMOTE_WRITE, &mr));
	tcp_message(ctx);
	if (libfabric_mapped())
		FAIL("libfabric is mapped by a default context that never used ofi");
	CHECK(ferry_mr_dereg(mr));
	ferry_ctx_destroy(ctx);
	struct ferry_provider_info oi = ofi_info();
	if (!libfabric_mapped())
		FAIL("ferry_provider_list() described ofi (\"%s\") without opening libfabric",
		     oi.detail);
	printf("libfabric not mapped by contexts that did not use ofi; mapped after "
	       "ferry_provider_list (ofi: %s)\n", oi.detail);
}

static void app_handler(int sig)
{
	(void)sig;
}

/* Writes 4 KiB into a region of ctx over an ofi+tcp connection to itself. */
static void ofi_write_into(struct ferry_ctx *ctx, struct ferry_mr *mr, char *region,
			   struct ferry_ep *cep)
{
	char blob[FERRY_RKEY_MAX], src[4096];
	size_t blob_len = sizeof(blob);
	struct ferry_rkey *rk;

	memset(src, 0xc3, sizeof(src));
	CHECK(ferry_mr_pack(mr, blob, &blob_len));
	CHECK(ferry_rkey_unpack(ctx, blob, blob_len, &rk));
	CHECK(ferry_write(cep, src, sizeof(src), NULL, rk, 0, NULL, NULL));
	wait_one(ctx, "write over ofi+tcp");
	if (memcmp(region, src, sizeof(src)) != 0)
		FAIL("the write over ofi+tcp did not arrive in the region registered before "
		     "the ofi provider opened");
	ferry_rkey_destroy(rk);
}

static void expect_ofi_mrs(struct ferry_ctx *ctx, uint64_t want, const char *when)
{
	struct ferry_stats st;
	int rc = ferry_stats_get(ctx, "ofi", &st);
	if (rc < 0)
		FAIL("%s: the ofi provider is not open: %s", when, ferry_errname(rc));
	if (st.mrs_registered != want)
		FAIL("%s: %llu regions registered with ofi, expected %llu", when,
		     (unsigned long long)st.mrs_registered, (unsigned long long)want);
}

/*
 * Listens on ofi+tcp (which opens the provider if nothing did yet), checks that the
 * one region is registered with it, writes into the region over a connection to
 * ourselves, then takes everything down with the context.
 */
static void write_over_ofi_and_destroy(struct ferry_ctx *ctx, struct ferry_mr *mr,
				       char *region, const char *when)
{
	struct ferry_listener *l;
	struct ferry_ep *cep, *sep;

	self_connect(ctx, "ofi+tcp://127.0.0.1:0", &l, &cep, &sep);
	expect_ofi_mrs(ctx, 1, when);
	ofi_write_into(ctx, mr, region, cep);
	ferry_ep_close(cep);
	ferry_ep_close(sep);
	ferry_listener_close(l);
	CHECK(ferry_mr_dereg(mr));
	ferry_ctx_destroy(ctx);
}

static void case_used(void)
{
	static const int sigs[] = { SIGINT, SIGTERM, SIGSEGV, SIGBUS, SIGILL, SIGABRT };
	static char region[4096], region2[4096];
	struct sigaction mine = { .sa_handler = app_handler }, now;
	struct sigaction before[sizeof(sigs) / sizeof(sigs[0])];
	struct ferry_ctx *ctx;
	struct ferry_stats st;
	struct ferry_mr *mr;
	char blob[FERRY_RKEY_MAX];
	size_t blob_len = sizeof(blob);

	if (libfabric_mapped())
		FAIL("libfabric is mapped before any context: libferry links it");
	/* SIGINT and SIGTERM handled by the application; the rest as they are (a
	 * sanitizer's, or the default). */
	sigaction(SIGINT, &mine, NULL);
	sigaction(SIGTERM, &mine, NULL);
	for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
		sigaction(sigs[i], NULL, &before[i]);

	/* First use by an rkey packed for the user. */
	CHECK(ferry_ctx_create(NULL, &ctx));
	CHECK(ferry_mr_reg(ctx, region, sizeof(region), FERRY_ACCESS_REMOTE_WRITE, &mr));
	if (libfabric_mapped() || ferry_stats_get(ctx, "ofi", &st) != FERRY_ENOENT)
		FAIL("the ofi provider opened with the context, before its first use");
	CHECK(ferry_mr_pack(mr, blob, &blob_len));
	if (!libfabric_mapped())
		FAIL("packing an rkey with the ofi provider allowed did not open libfabric");
	if (blob_len < 6 || blob[5] < 2)
		FAIL("the rkey packed at the ofi provider's opening has %d provider keys, "
		     "expected tcp's and ofi's", blob_len < 6 ? 0 : blob[5]);
	for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++) {
		sigaction(sigs[i], NULL, &now);
		if (now.sa_handler != before[i].sa_handler)
			FAIL("opening libfabric replaced the handler of signal %d (%s)", sigs[i],
			     strsignal(sigs[i]));
	}
	expect_ofi_mrs(ctx, 1, "after the first ferry_mr_pack");
	write_over_ofi_and_destroy(ctx, mr, region, "with a connection over ofi+tcp");

	/* First use by a URI: listening on ofi+tcp opens it. */
	CHECK(ferry_ctx_create(NULL, &ctx));
	CHECK(ferry_mr_reg(ctx, region2, sizeof(region2), FERRY_ACCESS_REMOTE_WRITE, &mr));
	if (ferry_stats_get(ctx, "ofi", &st) != FERRY_ENOENT)
		FAIL("the ofi provider opened with the second context");
	write_over_ofi_and_destroy(ctx, mr, region2, "after listening on ofi+tcp");

	struct ferry_provider_info oi = ofi_info();
	if (oi.status != 0 || !strstr(oi.detail, "ofi+tcp: ok"))
		FAIL("ofi: status %d, \"%s\"", oi.status, oi.detail);
	printf("the ofi provider opened at its first use (an rkey, then a URI), regions "
	       "registered before written over ofi+tcp, the signal handlers unchanged; "
	       "ofi: %s\n", oi.detail);
}

/* Runs a context with a library that will not do; expect: what the reason names. */
static void case_unusable(const char *expect)
{
	struct ferry_ctx *ctx;
	struct ferry_listener *l = NULL;
	struct ferry_ep *ep = NULL;
	struct ferry_stats st;
	char log_path[] = "/tmp/ferry-ofi-library-XXXXXX", log[8192] = "";
	const char *lib = getenv("FERRY_OFI_LIBRARY");

	if (!lib || !lib[0])
		FAIL("FERRY_OFI_LIBRARY is not set: CTest sets it for this case");
	/* The library logs to stderr: keep what it says during the context's creation. */
	int log_fd = mkstemp(log_path), saved = dup(2);
	if (log_fd < 0 || saved < 0 || dup2(log_fd, 2) < 0)
		FAIL("cannot redirect stderr to %s", log_path);
	unlink(log_path);
	int rc = ferry_ctx_create(NULL, &ctx);
	/* The first use of ofi tries to open it. */
	int listen_rc = rc < 0 ? rc : ferry_listen(ctx, "ofi+tcp://127.0.0.1:0", NULL, &l);
	fflush(stderr);
	dup2(saved, 2);
	close(saved);
	ssize_t got = pread(log_fd, log, sizeof(log) - 1, 0);
	close(log_fd);
	fprintf(stderr, "%s", got > 0 ? log : "");
	CHECK(rc);

	if (!strstr(log, "FERRY_OFI_LIBRARY") || !strstr(log, expect))
		FAIL("no warning naming FERRY_OFI_LIBRARY and \"%s\" in the log:\n%s", expect,
		     log);
	if (listen_rc != FERRY_EPROTONOSUPPORT)
		FAIL("ferry_listen(ofi+tcp) without libfabric: %s, expected EPROTONOSUPPORT",
		     ferry_errname(listen_rc));
	if (ferry_stats_get(ctx, "ofi", &st) != FERRY_ENOENT)
		FAIL("the ofi provider is open with FERRY_OFI_LIBRARY=%s", lib);
	rc = ferry_connect(ctx, "ofi+tcp://127.0.0.1:1", NULL, &ep);
	if (rc != FERRY_EPROTONOSUPPORT)
		FAIL("ferry_connect(ofi+tcp) without libfabric: %s, expected EPROTONOSUPPORT",
		     ferry_errname(rc));
	tcp_message(ctx); /* the other providers are unaffected */
	ferry_ctx_destroy(ctx);

	struct ferry_provider_info oi = ofi_info();
	if (!oi.built || oi.status != FERRY_ENODEV || !strstr(oi.detail, expect))
		FAIL("ofi: built %d, status %s, \"%s\": expected ENODEV naming \"%s\"", oi.built,
		     ferry_errname(oi.status), oi.detail, expect);
	if (libfabric_mapped())
		FAIL("libfabric is mapped though FERRY_OFI_LIBRARY named another library");
	printf("FERRY_OFI_LIBRARY=%s: ofi not available (%s); tcp works\n", lib, oi.detail);
}

int main(int argc, char **argv)
{
	const char *c = argc > 1 ? argv[1] : "";

	if (strcmp(c, "unused") == 0)
		case_unused();
	else if (strcmp(c, "used") == 0)
		case_used();
	else if (strcmp(c, "missing") == 0)
		case_unusable(getenv("FERRY_OFI_LIBRARY") ? getenv("FERRY_OFI_LIBRARY") : "?");
	else if (strcmp(c, "wrong") == 0)
		case_unusable("has no fi_getinfo");
	else
		FAIL("usage: %s unused|used|missing|wrong", argv[0]);
	return 0;
}
