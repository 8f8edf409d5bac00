/*
 * example_quickstart.c - the README's quick start, as a program (CTest
 * example.quickstart runs it, so the README's example is known to work).
 *
 *   example_quickstart                 both sides: the server runs in a child process
 *   example_quickstart server [URI]    listen (default tcp://127.0.0.1:0), print address
 *   example_quickstart client ADDRESS  connect to a server's printed address
 *
 * The server registers 1 MiB that peers may write and read, and sends its rkey; the
 * client writes 1 MiB into it, reads it back, compares, and sends a tagged message.
 */
#include <ferry/ferry.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define SIZE (1u << 20)
#define TAG_RKEY 1
#define TAG_HELLO 2

#define CHECK(call)                                                                  \
	do {                                                                         \
		int rc_ = (call);                                                    \
		if (rc_ < 0) {                                                       \
			fprintf(stderr, "%s: %s\n", #call, ferry_strerror(rc_));     \
			exit(1);                                                     \
		}                                                                    \
	} while (0)

/* Waits for the next completion (there is one operation in flight) and checks it.
 * Waiting also drives progress: that is when a peer's write or read is served. */
static void wait_one(struct ferry_ctx *ctx, const char *what, struct ferry_completion *c)
{
	int n = ferry_cq_wait(ferry_ctx_cq(ctx), c, 1, 10000 /* ms */);

	if (n < 0 || c->status != 0) {
		fprintf(stderr, "%s: %s\n", what, ferry_strerror(n < 0 ? n : c->status));
		exit(1);
	}
}

static int server(const char *uri, int addr_fd)
{
	struct ferry_ctx *ctx;
	struct ferry_listener *l;
	struct ferry_ep *ep;
	struct ferry_mr *mr;
	struct ferry_completion c;
	char addr[512], blob[FERRY_RKEY_MAX], msg[64] = "";
	size_t addr_len = sizeof(addr), blob_len = sizeof(blob), i;
	unsigned char *region = calloc(1, SIZE);

	CHECK(ferry_ctx_create(NULL, &ctx));
	CHECK(ferry_listen(ctx, uri, NULL, &l));
	CHECK(ferry_listener_addr(l, addr, &addr_len));
	printf("server: listening on %s\n", addr);
	if (addr_fd >= 0) { /* tell the client process where to connect */
		if (write(addr_fd, addr, addr_len) != (ssize_t)addr_len)
			return 1;
		close(addr_fd);
	}
	CHECK(ferry_listener_accept(l, &ep, 10000));

	/* A region peers may write into and read from; its rkey travels as a message. */
	CHECK(ferry_mr_reg(ctx, region, SIZE,
			   FERRY_ACCESS_REMOTE_WRITE | FERRY_ACCESS_REMOTE_READ, &mr));
	CHECK(ferry_mr_pack(mr, blob, &blob_len));
	CHECK(ferry_send(ep, blob, blob_len, TAG_RKEY, NULL, NULL));
	wait_one(ctx, "send rkey", &c);

	/* The client's write and read need no call here; its message says it is done. */
	CHECK(ferry_recv(ep, msg, sizeof(msg) - 1, TAG_HELLO, ~(uint64_t)0, NULL, NULL));
	wait_one(ctx, "recv", &c);
	for (i = 0; i < SIZE && region[i] == (unsigned char)(i * 7); i++)
		;
	printf("server: got \"%s\" (tag %llu); region %s\n", msg, (unsigned long long)c.tag,
	       i == SIZE ? "holds the client's bytes" : "is WRONG");

	ferry_ep_close(ep);
	ferry_mr_dereg(mr);
	ferry_listener_close(l);
	ferry_ctx_destroy(ctx);
	free(region);
	return i == SIZE ? 0 : 1;
}

static int client(const char *addr)
{
	struct ferry_ctx *ctx;
	struct ferry_ep *ep;
	struct ferry_rkey *rkey;
	struct ferry_mr *src_mr, *dst_mr;
	struct ferry_completion c;
	char blob[FERRY_RKEY_MAX];
	const char hello[] = "hello from the client";
	unsigned char *src = malloc(SIZE), *dst = calloc(1, SIZE);
	size_t i;
	int same;

	CHECK(ferry_ctx_create(NULL, &ctx));
	CHECK(ferry_connect(ctx, addr, NULL, &ep));
	printf("client: connected to %s over %s\n", ferry_ep_peer(ep), ferry_ep_provider(ep));

	/* The server's rkey: unpack it to name the server's region in write/read. */
	CHECK(ferry_recv(ep, blob, sizeof(blob), TAG_RKEY, ~(uint64_t)0, NULL, NULL));
	wait_one(ctx, "recv rkey", &c);
	CHECK(ferry_rkey_unpack(ctx, blob, c.len, &rkey));

	for (i = 0; i < SIZE; i++)
		src[i] = (unsigned char)(i * 7);
	CHECK(ferry_mr_reg(ctx, src, SIZE, FERRY_ACCESS_LOCAL, &src_mr));
	CHECK(ferry_mr_reg(ctx, dst, SIZE, FERRY_ACCESS_LOCAL, &dst_mr));

	CHECK(ferry_write(ep, src, SIZE, src_mr, rkey, 0, NULL, NULL));
	wait_one(ctx, "write", &c);
	CHECK(ferry_read(ep, dst, SIZE, dst_mr, rkey, 0, NULL, NULL));
	wait_one(ctx, "read", &c);
	same = memcmp(src, dst, SIZE) == 0;
	printf("client: wrote 1 MiB, read it back: %s\n", same ? "identical" : "DIFFERENT");

	CHECK(ferry_send(ep, hello, sizeof(hello), TAG_HELLO, NULL, NULL));
	wait_one(ctx, "send", &c);

	ferry_rkey_destroy(rkey);
	ferry_mr_dereg(src_mr);
	ferry_mr_dereg(dst_mr);
	ferry_ep_close(ep);
	ferry_ctx_destroy(ctx);
	free(src);
	free(dst);
	return same ? 0 : 1;
}

int main(int argc, char **argv)
{
	char addr[512] = "";
	size_t got = 0;
	ssize_t n;
	int fds[2], status, rc;
	pid_t pid;

	if (argc >= 2 && strcmp(argv[1], "server") == 0)
		return server(argc > 2 ? argv[2] : "tcp://127.0.0.1:0", -1);
	if (argc == 3 && strcmp(argv[1], "client") == 0)
		return client(argv[2]);
	if (argc != 1) {
		fprintf(stderr, "usage: %s [server [URI] | client ADDRESS]\n", argv[0]);
		return 2;
	}

	/* Both sides. Fork before any ferry call: a context owns threads. */
	if (pipe(fds) != 0 || (pid = fork()) < 0) {
		perror("pipe/fork");
		return 1;
	}
	if (pid == 0) {
		close(fds[0]);
		exit(server("tcp://127.0.0.1:0", fds[1]));
	}
	close(fds[1]);
	while (got < sizeof(addr) - 1 &&
	       (n = read(fds[0], addr + got, sizeof(addr) - 1 - got)) > 0)
		got += (size_t)n;
	close(fds[0]);
	rc = got ? client(addr) : 1;
	if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
		rc = 1;
	printf("quickstart: %s\n", rc == 0 ? "ok" : "FAILED");
	return rc;
}
