/*
 * fault_proxy.c - see fault_proxy.h for what it does and the design notes.
 */
#define _GNU_SOURCE
#include "fault_proxy.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define FP_QUEUE_MAX (256u * 1024u) /* bytes queued per direction before reading stops */
#define FP_SOCKBUF (128 * 1024)     /* small socket buffers: stalls bite quickly       */
#define FP_CHUNK_DEFAULT (64u * 1024u)
#define FP_CLOSING_MS 2000          /* a cut (FIN) connection is held this long at most */
#define FP_POLL_MAX_MS 100

struct fp_chunk {
	struct fp_chunk *next;
	uint64_t ready_ns;
	uint32_t len, off;
	uint8_t data[];
};

struct fp_half {
	struct fp_dir_cfg cfg;
	struct fp_chunk *head, *tail;
	uint64_t queued;            /* bytes in chunks                              */
	uint64_t in_off, out_off;   /* read from src / forwarded or dropped         */
	uint64_t next_rand_flip;    /* stream offset of the next random flip        */
	uint64_t stall_until_ns;
	enum fp_silence silence;
	enum fp_cut cut;            /* pending cut at cut_at (cfg or fp_cut)         */
	uint64_t cut_at;
	double tokens;
	uint64_t tokens_ns;
	uint64_t rng;
	bool eof, shut;             /* src said EOF / FIN passed on to dst          */
	bool want_write;            /* dst was full                                 */
};

struct fp_conn {
	struct fp_conn *next;
	int fd[2];                  /* [FP_C2S] client side (source of c2s), [FP_S2C] target side */
	struct fp_half h[2];
	bool closing;               /* cut with FIN: discard input until both close */
	uint64_t closing_until_ns;
	bool dead;
};

struct fp_next {
	struct fp_next *next;
	struct fp_dir_cfg cfg[2];
};

struct fp_proxy {
	pthread_mutex_t lock;
	pthread_t thread;
	bool stop;
	int lfd, wake[2];
	uint16_t port;
	struct sockaddr_in target;
	struct fp_dir_cfg defaults[2];
	struct fp_next *next_head, *next_tail;
	struct fp_conn *conns;
	struct fp_stats st;
};

static uint64_t fp_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t fp_rand(uint64_t *s)
{
	/* splitmix64: good enough for chunk sizes and flip positions */
	uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
	return z ^ (z >> 31);
}

static double fp_rand01(uint64_t *s)
{
	return ((double)(fp_rand(s) >> 11) + 0.5) / 9007199254740992.0;
}

static uint64_t fp_next_flip_gap(struct fp_half *h)
{
	double r = h->cfg.flip_rate;

	if (r <= 0)
		return UINT64_MAX;
	if (r >= 1)
		return 1;
	/* geometric gap: the number of bytes until the next flipped one */
	double g = ceil(log(fp_rand01(&h->rng)) / log1p(-r));
	return g < 1 ? 1 : g > 1e18 ? UINT64_MAX / 2 : (uint64_t)g;
}

static void fp_wake(struct fp_proxy *p)
{
	char b = 1;

	(void)!write(p->wake[1], &b, 1);
}

static void fp_small_bufs(int fd)
{
	int sz = FP_SOCKBUF, one = 1;

	(void)setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof(sz));
	(void)setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz));
	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

static void fp_half_init(struct fp_half *h, const struct fp_dir_cfg *cfg, unsigned salt)
{
	memset(h, 0, sizeof(*h));
	h->cfg = *cfg;
	h->rng = (cfg->seed ? cfg->seed : 0x5EEDF00Dull) + salt;
	h->cut = cfg->cut;
	h->cut_at = cfg->cut_after;
	h->next_rand_flip = fp_next_flip_gap(h) - 1;
	h->tokens_ns = fp_now_ns();
}

/* ------------------------------------------------------------------ teardown */

static void fp_free_chunks(struct fp_half *h)
{
	while (h->head) {
		struct fp_chunk *c = h->head;

		h->head = c->next;
		free(c);
	}
	h->tail = NULL;
	h->queued = 0;
}

static void fp_close_fd(int *fd, bool rst)
{
	if (*fd < 0)
		return;
	if (rst) {
		struct linger lg = {.l_onoff = 1, .l_linger = 0};

		(void)setsockopt(*fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	}
	close(*fd);
	*fd = -1;
}

static void fp_conn_kill(struct fp_conn *c, bool rst)
{
	fp_close_fd(&c->fd[0], rst);
	fp_close_fd(&c->fd[1], rst);
	fp_free_chunks(&c->h[0]);
	fp_free_chunks(&c->h[1]);
	c->dead = true;
}

/* A cut: RST both peers at once, or FIN both and keep discarding for a while. */
static void fp_conn_cut(struct fp_proxy *p, struct fp_conn *c, enum fp_cut how)
{
	p->st.cuts++;
	if (how == FP_CUT_RST) {
		fp_conn_kill(c, true);
		return;
	}
	for (int d = 0; d < 2; d++) {
		fp_free_chunks(&c->h[d]);
		if (c->fd[d] >= 0)
			(void)shutdown(c->fd[d], SHUT_WR);
		c->h[d].shut = true;
	}
	c->closing = true;
	c->closing_until_ns = fp_now_ns() + (uint64_t)FP_CLOSING_MS * 1000000ull;
}

/* ------------------------------------------------------------------ data path */

/* Reads one chunk from src into direction d's queue; false when the conn died. */
static bool fp_read(struct fp_proxy *p, struct fp_conn *c, int d, uint64_t now)
{
	struct fp_half *h = &c->h[d];
	uint32_t max = h->cfg.chunk_max ? h->cfg.chunk_max : FP_CHUNK_DEFAULT;
	uint32_t want = h->cfg.chunk_random ? 1 + (uint32_t)(fp_rand(&h->rng) % max) : max;
	struct fp_chunk *ch = malloc(sizeof(*ch) + want);
	ssize_t n;

	if (!ch)
		return true; /* try again later */
	do {
		n = recv(c->fd[d], ch->data, want, MSG_DONTWAIT);
	} while (n < 0 && errno == EINTR);
	if (n < 0) {
		free(ch);
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			return true;
		/* A reset (or worse) from one peer: pass it on as a reset. */
		fp_conn_kill(c, true);
		return false;
	}
	if (n == 0) {
		free(ch);
		h->eof = true;
		return true;
	}
	/* Flips at chosen offsets, then random ones. */
	for (unsigned i = 0; i < h->cfg.nflips && i < FP_MAX_FLIPS; i++) {
		uint64_t o = h->cfg.flips[i].offset;

		if (o >= h->in_off && o < h->in_off + (uint64_t)n) {
			uint8_t m = h->cfg.flips[i].xor_mask ? h->cfg.flips[i].xor_mask : 0xff;

			ch->data[o - h->in_off] ^= m;
			p->st.flips[d]++;
		}
	}
	while (h->next_rand_flip < h->in_off + (uint64_t)n) {
		ch->data[h->next_rand_flip - h->in_off] ^= (uint8_t)(1u << (fp_rand(&h->rng) % 8));
		p->st.flips[d]++;
		uint64_t gap = fp_next_flip_gap(h);
		h->next_rand_flip = gap >= UINT64_MAX - h->next_rand_flip ? UINT64_MAX
									 : h->next_rand_flip + gap;
	}
	h->in_off += (uint64_t)n;
	ch->len = (uint32_t)n;
	ch->off = 0;
	ch->next = NULL;
	ch->ready_ns = now + (uint64_t)h->cfg.delay_ms * 1000000ull;
	if (h->tail)
		h->tail->next = ch;
	else
		h->head = ch;
	h->tail = ch;
	h->queued += (uint64_t)n;
	return true;
}

static void fp_refill(struct fp_half *h, uint64_t now)
{
	if (!h->cfg.rate_bps)
		return;
	double burst = (double)h->cfg.rate_bps / 50.0; /* 20 ms worth */
	if (burst < 1024)
		burst = 1024;
	h->tokens += (double)(now - h->tokens_ns) * (double)h->cfg.rate_bps / 1e9;
	if (h->tokens > burst)
		h->tokens = burst;
	h->tokens_ns = now;
}

/*
 * Forwards what is due in direction d. Returns false when the connection died.
 * *wake_ns is lowered to the time something becomes due.
 */
static bool fp_forward(struct fp_proxy *p, struct fp_conn *c, int d, uint64_t now,
		       uint64_t *wake_ns)
{
	struct fp_half *h = &c->h[d];
	int dst = c->fd[1 - d];

	h->want_write = false;
	if (h->stall_until_ns > now) {
		if (h->stall_until_ns < *wake_ns)
			*wake_ns = h->stall_until_ns;
		return true;
	}
	if (h->silence == FP_SILENCE_FREEZE)
		return true;
	while (h->head) {
		struct fp_chunk *ch = h->head;
		uint64_t n = ch->len - ch->off;

		if (h->cut != FP_CUT_NONE && h->out_off >= h->cut_at) {
			fp_conn_cut(p, c, h->cut);
			return !c->dead;
		}
		if (h->silence == FP_SILENCE_DROP ||
		    (h->cfg.drop && h->out_off >= h->cfg.drop_after)) {
			p->st.dropped[d] += n;
			h->out_off += n;
			h->queued -= n;
			h->head = ch->next;
			if (!h->head)
				h->tail = NULL;
			free(ch);
			continue;
		}
		if (ch->ready_ns > now) {
			if (ch->ready_ns < *wake_ns)
				*wake_ns = ch->ready_ns;
			return true;
		}
		if (h->cut != FP_CUT_NONE && h->cut_at - h->out_off < n)
			n = h->cut_at - h->out_off;
		if (h->cfg.drop && h->cfg.drop_after - h->out_off < n)
			n = h->cfg.drop_after - h->out_off;
		if (h->cfg.rate_bps) {
			fp_refill(h, now);
			if (h->tokens < 1) {
				uint64_t t = now + (uint64_t)((1 - h->tokens) * 1e9 /
							       (double)h->cfg.rate_bps) + 1;
				if (t < *wake_ns)
					*wake_ns = t;
				return true;
			}
			if ((double)n > h->tokens)
				n = (uint64_t)h->tokens;
		}
		ssize_t w;
		do {
			w = send(dst, ch->data + ch->off, (size_t)n, MSG_DONTWAIT | MSG_NOSIGNAL);
		} while (w < 0 && errno == EINTR);
		if (w < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK) {
				h->want_write = true;
				return true;
			}
			fp_conn_kill(c, true);
			return false;
		}
		if (h->cfg.rate_bps)
			h->tokens -= (double)w;
		ch->off += (uint32_t)w;
		h->out_off += (uint64_t)w;
		h->queued -= (uint64_t)w;
		p->st.bytes[d] += (uint64_t)w;
		if (ch->off == ch->len) {
			h->head = ch->next;
			if (!h->head)
				h->tail = NULL;
			free(ch);
		} else if ((uint64_t)w < n) {
			h->want_write = true;
			return true;
		}
	}
	if (h->cut != FP_CUT_NONE && h->out_off >= h->cut_at) {
		fp_conn_cut(p, c, h->cut);
		return !c->dead;
	}
	/* Everything passed on and the source said EOF: pass the FIN on too, unless this
	 * direction is silenced (a silent peer says nothing, not even goodbye). */
	if (h->eof && !h->shut && h->silence == FP_SILENCE_OFF &&
	    !(h->cfg.drop && h->out_off >= h->cfg.drop_after)) {
		(void)shutdown(dst, SHUT_WR);
		h->shut = true;
	}
	return true;
}

/* ------------------------------------------------------------------ accept */

static void fp_accept(struct fp_proxy *p)
{
	for (;;) {
		int cfd = accept4(p->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (cfd < 0)
			return;
		fp_small_bufs(cfd);
		int tfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (tfd < 0) {
			fp_close_fd(&cfd, true);
			continue;
		}
		fp_small_bufs(tfd);
		/* Blocking connect: the targets are on this machine and answer at once. */
		if (connect(tfd, (struct sockaddr *)&p->target, sizeof(p->target)) < 0) {
			p->st.conns_failed++;
			fp_close_fd(&tfd, false);
			fp_close_fd(&cfd, true);
			continue;
		}
		(void)fcntl(tfd, F_SETFL, fcntl(tfd, F_GETFL) | O_NONBLOCK);

		struct fp_conn *c = calloc(1, sizeof(*c));
		if (!c) {
			fp_close_fd(&tfd, true);
			fp_close_fd(&cfd, true);
			continue;
		}
		c->fd[FP_C2S] = cfd;
		c->fd[FP_S2C] = tfd;
		struct fp_next *nx = p->next_head;
		const struct fp_dir_cfg *cfg = nx ? nx->cfg : p->defaults;
		unsigned salt = (unsigned)p->st.conns_accepted * 2;
		fp_half_init(&c->h[FP_C2S], &cfg[FP_C2S], salt);
		fp_half_init(&c->h[FP_S2C], &cfg[FP_S2C], salt + 1);
		if (nx) {
			p->next_head = nx->next;
			if (!p->next_head)
				p->next_tail = NULL;
			free(nx);
		}
		c->next = p->conns;
		p->conns = c;
		p->st.conns_accepted++;
	}
}

/* ------------------------------------------------------------------ the loop */

static void *fp_main(void *arg)
{
	struct fp_proxy *p = arg;
	struct pollfd *pfd = NULL;
	struct fp_conn **who = NULL;
	int *what = NULL;
	size_t cap = 0;

	pthread_mutex_lock(&p->lock);
	while (!p->stop) {
		uint64_t now = fp_now_ns();
		uint64_t wake_ns = now + (uint64_t)FP_POLL_MAX_MS * 1000000ull;
		size_t nconn = 0, n = 0;

		/* Forward what is due, reap dead connections. */
		for (struct fp_conn **pc = &p->conns; *pc;) {
			struct fp_conn *c = *pc;

			if (!c->dead && !c->closing) {
				for (int d = 0; d < 2 && !c->dead && !c->closing; d++)
					fp_forward(p, c, d, now, &wake_ns);
				if (!c->dead && !c->closing && c->h[0].shut && c->h[1].shut &&
				    !c->h[0].head && !c->h[1].head)
					fp_conn_kill(c, false);
			}
			if (c->closing && !c->dead) {
				if (now >= c->closing_until_ns ||
				    (c->h[0].eof && c->h[1].eof))
					fp_conn_kill(c, false);
				else if (c->closing_until_ns < wake_ns)
					wake_ns = c->closing_until_ns;
			}
			if (c->dead) {
				*pc = c->next;
				free(c);
				continue;
			}
			nconn++;
			pc = &c->next;
		}
		p->st.conns_live = nconn;

		if (cap < 2 + 2 * nconn) {
			cap = 2 * (2 + 2 * nconn);
			pfd = realloc(pfd, cap * sizeof(*pfd));
			who = realloc(who, cap * sizeof(*who));
			what = realloc(what, cap * sizeof(*what));
			if (!pfd || !who || !what)
				abort(); /* test tool: out of memory is fatal */
		}
		pfd[n++] = (struct pollfd){.fd = p->wake[0], .events = POLLIN};
		pfd[n++] = (struct pollfd){.fd = p->lfd, .events = POLLIN};
		for (struct fp_conn *c = p->conns; c; c = c->next) {
			for (int fdi = 0; fdi < 2; fdi++) {
				/* fd[fdi] is the source of direction fdi, the sink of 1-fdi. */
				struct fp_half *in = &c->h[fdi], *out = &c->h[1 - fdi];
				short ev = 0;

				if (c->closing) {
					if (!in->eof)
						ev |= POLLIN;
				} else {
					bool stalled = in->stall_until_ns > now;
					if (!in->eof && !stalled && in->silence != FP_SILENCE_FREEZE &&
					    in->queued < FP_QUEUE_MAX)
						ev |= POLLIN;
					if (out->want_write)
						ev |= POLLOUT;
				}
				if (!ev)
					continue;
				pfd[n] = (struct pollfd){.fd = c->fd[fdi], .events = ev};
				who[n] = c;
				what[n] = fdi;
				n++;
			}
		}
		int tmo = (int)((wake_ns - now + 999999) / 1000000);
		if (tmo < 0)
			tmo = 0;

		pthread_mutex_unlock(&p->lock);
		int rc = poll(pfd, n, tmo);
		pthread_mutex_lock(&p->lock);
		if (rc <= 0)
			continue;
		if (pfd[0].revents) {
			char buf[64];

			while (read(p->wake[0], buf, sizeof(buf)) > 0)
				;
		}
		if (pfd[1].revents & POLLIN)
			fp_accept(p);
		now = fp_now_ns();
		for (size_t i = 2; i < n; i++) {
			struct fp_conn *c = who[i];
			int d = what[i];

			if (c->dead || !pfd[i].revents)
				continue;
			if (pfd[i].revents & (POLLIN | POLLHUP | POLLERR)) {
				if (c->closing) {
					char junk[16384];
					ssize_t r = recv(c->fd[d], junk, sizeof(junk), MSG_DONTWAIT);

					if (r > 0)
						p->st.dropped[d] += (uint64_t)r;
					else if (r == 0 || (errno != EAGAIN && errno != EINTR))
						c->h[d].eof = true;
				} else if (!c->h[d].eof) {
					/* Read a few chunks per wake-up, not forever. */
					for (int k = 0; k < 8 && !c->dead && !c->h[d].eof &&
							c->h[d].queued < FP_QUEUE_MAX; k++) {
						uint64_t before = c->h[d].in_off;

						if (!fp_read(p, c, d, now) || c->h[d].in_off == before)
							break;
					}
				}
			}
		}
	}
	pthread_mutex_unlock(&p->lock);
	free(pfd);
	free(who);
	free(what);
	return NULL;
}

/* ------------------------------------------------------------------ control */

int fp_start(const char *target_host, uint16_t target_port, struct fp_proxy **out)
{
	struct fp_proxy *p = calloc(1, sizeof(*p));
	struct sockaddr_in sa = {.sin_family = AF_INET};
	socklen_t slen = sizeof(sa);
	int one = 1, err;

	if (!p)
		return -ENOMEM;
	p->lfd = p->wake[0] = p->wake[1] = -1;
	p->target.sin_family = AF_INET;
	p->target.sin_port = htons(target_port);
	if (inet_pton(AF_INET, target_host, &p->target.sin_addr) != 1) {
		free(p);
		return -EINVAL;
	}
	if (pipe2(p->wake, O_NONBLOCK | O_CLOEXEC) < 0)
		goto fail_errno;
	p->lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (p->lfd < 0)
		goto fail_errno;
	(void)setsockopt(p->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	fp_small_bufs(p->lfd); /* inherited by accepted sockets, window scale included */
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (bind(p->lfd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(p->lfd, 128) < 0 ||
	    getsockname(p->lfd, (struct sockaddr *)&sa, &slen) < 0)
		goto fail_errno;
	p->port = ntohs(sa.sin_port);
	pthread_mutex_init(&p->lock, NULL);
	err = pthread_create(&p->thread, NULL, fp_main, p);
	if (err) {
		pthread_mutex_destroy(&p->lock);
		errno = err;
		goto fail_errno;
	}
	*out = p;
	return 0;

fail_errno:
	err = -errno;
	if (p->lfd >= 0)
		close(p->lfd);
	if (p->wake[0] >= 0) {
		close(p->wake[0]);
		close(p->wake[1]);
	}
	free(p);
	return err;
}

void fp_stop(struct fp_proxy *p)
{
	if (!p)
		return;
	pthread_mutex_lock(&p->lock);
	p->stop = true;
	fp_wake(p);
	pthread_mutex_unlock(&p->lock);
	pthread_join(p->thread, NULL);
	while (p->conns) {
		struct fp_conn *c = p->conns;

		p->conns = c->next;
		fp_conn_kill(c, true);
		free(c);
	}
	while (p->next_head) {
		struct fp_next *nx = p->next_head;

		p->next_head = nx->next;
		free(nx);
	}
	close(p->lfd);
	close(p->wake[0]);
	close(p->wake[1]);
	pthread_mutex_destroy(&p->lock);
	free(p);
}

uint16_t fp_port(const struct fp_proxy *p)
{
	return p->port;
}

void fp_uri(const struct fp_proxy *p, char *buf, unsigned len)
{
	snprintf(buf, len, "tcp://127.0.0.1:%u", (unsigned)p->port);
}

void fp_set_defaults(struct fp_proxy *p, const struct fp_dir_cfg *c2s,
		     const struct fp_dir_cfg *s2c)
{
	static const struct fp_dir_cfg clean;

	pthread_mutex_lock(&p->lock);
	p->defaults[FP_C2S] = c2s ? *c2s : clean;
	p->defaults[FP_S2C] = s2c ? *s2c : clean;
	pthread_mutex_unlock(&p->lock);
}

int fp_push_conn(struct fp_proxy *p, const struct fp_dir_cfg *c2s,
		 const struct fp_dir_cfg *s2c)
{
	struct fp_next *nx = calloc(1, sizeof(*nx));

	if (!nx)
		return -ENOMEM;
	if (c2s)
		nx->cfg[FP_C2S] = *c2s;
	if (s2c)
		nx->cfg[FP_S2C] = *s2c;
	pthread_mutex_lock(&p->lock);
	if (p->next_tail)
		p->next_tail->next = nx;
	else
		p->next_head = nx;
	p->next_tail = nx;
	pthread_mutex_unlock(&p->lock);
	return 0;
}

void fp_stall(struct fp_proxy *p, unsigned dirs, uint32_t ms)
{
	uint64_t until = fp_now_ns() + (uint64_t)ms * 1000000ull;

	pthread_mutex_lock(&p->lock);
	for (struct fp_conn *c = p->conns; c; c = c->next)
		for (int d = 0; d < 2; d++)
			if (dirs & FP_DIR_MASK(d))
				c->h[d].stall_until_ns = until;
	fp_wake(p);
	pthread_mutex_unlock(&p->lock);
}

void fp_silence(struct fp_proxy *p, unsigned dirs, enum fp_silence mode)
{
	pthread_mutex_lock(&p->lock);
	for (struct fp_conn *c = p->conns; c; c = c->next)
		for (int d = 0; d < 2; d++)
			if (dirs & FP_DIR_MASK(d))
				c->h[d].silence = mode;
	fp_wake(p);
	pthread_mutex_unlock(&p->lock);
}

void fp_cut(struct fp_proxy *p, enum fp_dir dir, uint64_t more, enum fp_cut how)
{
	pthread_mutex_lock(&p->lock);
	for (struct fp_conn *c = p->conns; c; c = c->next) {
		if (c->dead || c->closing)
			continue;
		if (more == 0) {
			fp_conn_cut(p, c, how);
			continue;
		}
		c->h[dir].cut = how;
		c->h[dir].cut_at = c->h[dir].out_off + more;
	}
	fp_wake(p);
	pthread_mutex_unlock(&p->lock);
}

void fp_throttle(struct fp_proxy *p, unsigned dirs, uint64_t rate_bps)
{
	pthread_mutex_lock(&p->lock);
	for (struct fp_conn *c = p->conns; c; c = c->next)
		for (int d = 0; d < 2; d++)
			if (dirs & FP_DIR_MASK(d)) {
				c->h[d].cfg.rate_bps = rate_bps;
				c->h[d].tokens = 0;
				c->h[d].tokens_ns = fp_now_ns();
			}
	fp_wake(p);
	pthread_mutex_unlock(&p->lock);
}

void fp_get_stats(struct fp_proxy *p, struct fp_stats *out)
{
	pthread_mutex_lock(&p->lock);
	*out = p->st;
	pthread_mutex_unlock(&p->lock);
}

void fp_dump(struct fp_proxy *p, unsigned max)
{
	unsigned n = 0;

	pthread_mutex_lock(&p->lock);
	for (struct fp_conn *c = p->conns; c && n < max; c = c->next, n++) {
		printf("# proxy conn fds %d/%d%s:", c->fd[0], c->fd[1], c->closing ? " closing" : "");
		for (int d = 0; d < 2; d++) {
			struct fp_half *h = &c->h[d];
			printf(" %s in %llu out %llu queued %llu%s%s%s%s", d ? "s2c" : "c2s",
			       (unsigned long long)h->in_off, (unsigned long long)h->out_off,
			       (unsigned long long)h->queued, h->eof ? " eof" : "",
			       h->shut ? " shut" : "", h->want_write ? " blocked" : "",
			       h->silence ? " silenced" : "");
		}
		printf("\n");
	}
	pthread_mutex_unlock(&p->lock);
	fflush(stdout);
}
