/*
 * ft_service.c - the server side of the test protocol (see ft.h).
 *
 * One thread drives the service's context: it accepts endpoints from the accept queue
 * and serves requests from completions. Each accepted endpoint keeps `ctrl_depth`
 * control receives posted. Any failed operation on an endpoint closes it (which
 * cancels the rest); its state is freed when its last operation has completed, so
 * every operation is accounted for in the ledger.
 *
 * The service keeps the accept reference until the endpoint is torn down: idle
 * reaping of these endpoints is therefore done by the connecting side, whose goodbye
 * closes them here.
 */
#define _GNU_SOURCE
#include "ft.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { SV_CTRL_RECV = 1, SV_DATA_RECV, SV_DATA_SEND, SV_REPLY_SEND };

struct sv_region {
	struct sv_region *next;
	uint64_t id, len;
	uint8_t *buf;
	struct ferry_mr *mr;
};

struct sv_conn {
	struct sv_conn *prev, *next;
	struct ft_service *svc;
	struct ferry_ep *ep;
	struct sv_region *regions;
	unsigned outstanding;
	bool dead, closed;
	int status;
};

struct sv_op {
	struct ft_op op;
	struct sv_conn *sc;
	int role;
	struct ft_ctrl ctrl;
	struct ft_reply reply;
	uint8_t *buf;
	uint64_t len;
};

struct ft_service {
	char listen_uri[300]; /* cfg.listen_uri's default */
	struct ferry_ctx *ctx;
	struct ferry_listener *l;
	struct ft_service_cfg cfg;
	char addr[512];
	struct ft_tab tab;
	uint8_t *ro_buf;
	struct ferry_mr *ro_mr;
	uint8_t ro_blob[FERRY_RKEY_MAX];
	size_t ro_blob_len;
	struct sv_conn *conns;
	uint64_t region_next;
	pthread_mutex_t st_lock;
	struct ft_service_stats st;
	pthread_t thr;
	bool thr_on;
	atomic_bool stop;
};

#define SV_STAT(s, expr)                                                             \
	do {                                                                         \
		pthread_mutex_lock(&(s)->st_lock);                                   \
		expr;                                                                \
		pthread_mutex_unlock(&(s)->st_lock);                                 \
	} while (0)

static void sv_op_done(struct ft_tab *t, struct ft_op *op, const struct ferry_completion *c);

static void sv_count_failure(struct ft_service *s, int status)
{
	pthread_mutex_lock(&s->st_lock);
	s->st.ep_failures++;
	s->st.last_failure = status;
	for (int i = 0; i < 8; i++) {
		if (s->st.fail_codes[i] && s->st.fail_code_val[i] != status)
			continue;
		s->st.fail_code_val[i] = status;
		s->st.fail_codes[i]++;
		break;
	}
	pthread_mutex_unlock(&s->st_lock);
}

/* Says where received bytes were wrong (the first few times). */
static void sv_report_bad(struct ft_service *s, const char *what, const struct ft_ctrl *rq,
			  uint64_t got_len, long long bad_at, const uint8_t *buf)
{
	unsigned n;

	pthread_mutex_lock(&s->st_lock);
	n = (unsigned)s->st.verified_bad;
	pthread_mutex_unlock(&s->st_lock);
	if (n > 5)
		return;
	ft_note("service: WRONG BYTES in %s: aid %llu, %llu bytes expected, %llu received, first "
		"wrong byte at %lld (0x%02x)", what, (unsigned long long)rq->aid,
		(unsigned long long)rq->len, (unsigned long long)got_len, bad_at,
		bad_at >= 0 && (uint64_t)bad_at < got_len ? buf[bad_at] : 0);
}

static void sv_region_free(struct sv_region *r)
{
	if (r->mr)
		ferry_mr_dereg(r->mr);
	free(r->buf);
	free(r);
}

static void sv_maybe_free(struct sv_conn *sc)
{
	struct ft_service *s = sc->svc;

	if (!sc->closed || sc->outstanding)
		return;
	while (sc->regions) {
		struct sv_region *r = sc->regions;
		sc->regions = r->next;
		sv_region_free(r);
	}
	if (sc->prev)
		sc->prev->next = sc->next;
	else
		s->conns = sc->next;
	if (sc->next)
		sc->next->prev = sc->prev;
	SV_STAT(s, s->st.conns_live--; s->st.conns_closed++);
	free(sc);
}

/* Closes the endpoint (cancelling what is posted); the state goes with the last op. */
static void sv_close(struct sv_conn *sc, int status)
{
	if (!sc->dead) {
		sc->dead = true;
		sc->status = status;
		if (status != FERRY_ESHUTDOWN)
			sv_count_failure(sc->svc, status);
	}
	if (!sc->closed) {
		sc->closed = true;
		ferry_ep_close(sc->ep);
	}
}

static struct sv_op *sv_op_new(struct sv_conn *sc, int role)
{
	struct sv_op *o = calloc(1, sizeof(*o));

	FT_ASSERT(o, "out of memory");
	o->sc = sc;
	o->role = role;
	return o;
}

static void sv_op_free(struct sv_op *o)
{
	free(o->buf);
	free(o);
}

/* Posts o (its role says what); on a refused post the connection is closed. */
static int sv_post(struct sv_op *o, uint64_t tag)
{
	struct sv_conn *sc = o->sc;
	struct ft_tab *t = &sc->svc->tab;
	int rc;

	if (sc->closed) {
		sv_op_free(o);
		return FERRY_ENOTCONN;
	}
	bool is_recv = o->role == SV_CTRL_RECV || o->role == SV_DATA_RECV;
	void *uc = ft_tab_arm(t, &o->op, is_recv ? FERRY_OP_RECV : FERRY_OP_SEND, sv_op_done);
	switch (o->role) {
	case SV_CTRL_RECV:
		rc = ferry_recv(sc->ep, &o->ctrl, sizeof(o->ctrl), FT_TAG_KIND(FT_K_CTRL),
				FT_TAG_KIND_MASK, uc, NULL);
		break;
	case SV_DATA_RECV:
		rc = ferry_recv(sc->ep, o->buf, o->len, tag, ~0ull, uc, NULL);
		break;
	case SV_DATA_SEND:
		rc = ferry_send(sc->ep, o->buf, o->len, tag, uc, NULL);
		break;
	default: {
		size_t n = offsetof(struct ft_reply, blobs) + o->reply.ro_blob_len +
			   o->reply.wr_blob_len;
		rc = ferry_send(sc->ep, &o->reply, n, tag, uc, NULL);
		break;
	}
	}
	if (rc < 0) {
		ft_tab_unarm(t, &o->op);
		sv_op_free(o);
		sv_close(sc, rc);
		return rc;
	}
	sc->outstanding++;
	return 0;
}

static void sv_reply(struct sv_conn *sc, uint64_t aid, int status, uint64_t len,
		     uint64_t sum)
{
	struct sv_op *o = sv_op_new(sc, SV_REPLY_SEND);

	o->reply.magic = FT_MAGIC;
	o->reply.status = status;
	o->reply.aid = aid;
	o->reply.len = len;
	o->reply.sum = sum;
	sv_post(o, FT_TAG(FT_K_REPLY, aid));
}

static struct sv_region *sv_region_find(struct sv_conn *sc, uint64_t id)
{
	for (struct sv_region *r = sc->regions; r; r = r->next)
		if (r->id == id)
			return r;
	return NULL;
}

static void sv_cmd_info(struct sv_conn *sc, const struct ft_ctrl *rq)
{
	struct ft_service *s = sc->svc;
	uint64_t len = rq->len ? rq->len : 1u << 20;
	struct sv_region *r;
	struct sv_op *o;
	size_t blen = FERRY_RKEY_MAX;
	int rc;

	if (len > s->cfg.wr_max) {
		sv_reply(sc, rq->aid, FT_ST_BADREQ, 0, 0);
		return;
	}
	r = calloc(1, sizeof(*r));
	FT_ASSERT(r, "out of memory");
	r->len = len;
	r->buf = calloc(1, len);
	FT_ASSERT(r->buf, "out of memory (%llu byte region)", (unsigned long long)len);
	rc = ferry_mr_reg(s->ctx, r->buf, len,
			  FERRY_ACCESS_REMOTE_WRITE | FERRY_ACCESS_REMOTE_READ, &r->mr);
	if (rc < 0) {
		ft_note("service: ferry_mr_reg of %llu bytes: %s", (unsigned long long)len,
			ft_err(rc));
		sv_region_free(r);
		sv_reply(sc, rq->aid, rc, 0, 0);
		return;
	}
	r->id = ++s->region_next;
	r->next = sc->regions;
	sc->regions = r;

	o = sv_op_new(sc, SV_REPLY_SEND);
	o->reply.magic = FT_MAGIC;
	o->reply.aid = rq->aid;
	o->reply.region = r->id;
	o->reply.ro_len = s->cfg.ro_len;
	o->reply.wr_len = len;
	memcpy(o->reply.blobs, s->ro_blob, s->ro_blob_len);
	o->reply.ro_blob_len = (uint32_t)s->ro_blob_len;
	rc = ferry_mr_pack(r->mr, o->reply.blobs + s->ro_blob_len, &blen);
	FT_ASSERT(rc == 0, "ferry_mr_pack: %s", ft_err(rc));
	o->reply.wr_blob_len = (uint32_t)blen;
	sv_post(o, FT_TAG(FT_K_REPLY, rq->aid));
}

static void sv_cmd(struct sv_conn *sc, const struct ft_ctrl *rq)
{
	struct ft_service *s = sc->svc;
	struct sv_op *o;

	switch (rq->cmd) {
	case FT_CMD_INFO:
		SV_STAT(s, s->st.cmds[FT_INFO]++);
		sv_cmd_info(sc, rq);
		return;
	case FT_CMD_SEND:
		SV_STAT(s, s->st.cmds[FT_SEND]++);
		if (rq->len == 0 || rq->len > (1ull << 32)) {
			sv_reply(sc, rq->aid, FT_ST_BADREQ, 0, 0);
			return;
		}
		o = sv_op_new(sc, SV_DATA_RECV);
		o->ctrl = *rq;
		o->len = rq->len;
		o->buf = malloc(rq->len);
		FT_ASSERT(o->buf, "out of memory");
		sv_post(o, FT_TAG(FT_K_DATA, rq->aid));
		return;
	case FT_CMD_RECV:
		SV_STAT(s, s->st.cmds[FT_RECV]++);
		if (rq->len == 0 || rq->len > (1ull << 32))
			return; /* the client's receive waits for its deadline or the close */
		o = sv_op_new(sc, SV_DATA_SEND);
		o->len = rq->len;
		o->buf = malloc(rq->len);
		FT_ASSERT(o->buf, "out of memory");
		ft_fill(o->buf, rq->len, rq->seed, 0);
		if (sv_post(o, FT_TAG(FT_K_DATA, rq->aid)) == 0)
			SV_STAT(s, s->st.bytes_out += rq->len);
		return;
	case FT_CMD_VERIFY: {
		SV_STAT(s, s->st.cmds[FT_WRITE]++);
		struct sv_region *r = sv_region_find(sc, rq->region);
		if (!r || rq->offset > r->len || rq->len > r->len - rq->offset) {
			sv_reply(sc, rq->aid, FT_ST_BADREQ, 0, 0);
			return;
		}
		const uint8_t *p = r->buf + rq->offset;
		long long bad = ft_check(p, rq->len, rq->seed, 0);
		bool ok = bad < 0;
		SV_STAT(s, ok ? s->st.verified_ok++ : s->st.verified_bad++;
			s->st.bytes_in += rq->len);
		if (!ok)
			sv_report_bad(s, "a written region", rq, rq->len, bad, p);
		sv_reply(sc, rq->aid, ok ? 0 : FT_ST_BADDATA, rq->len, ft_sum(p, rq->len));
		return;
	}
	case FT_CMD_FREE: {
		SV_STAT(s, s->st.cmds[FT_FREE]++);
		for (struct sv_region **pr = &sc->regions; *pr; pr = &(*pr)->next) {
			if ((*pr)->id == rq->region) {
				struct sv_region *r = *pr;
				*pr = r->next;
				sv_region_free(r);
				break;
			}
		}
		return;
	}
	default:
		SV_STAT(s, s->st.cmds[FT_NKINDS]++);
		return;
	}
}

static void sv_op_done(struct ft_tab *t, struct ft_op *op, const struct ferry_completion *c)
{
	struct sv_op *o = (struct sv_op *)op;
	struct sv_conn *sc = o->sc;
	struct ft_service *s = sc->svc;

	(void)t;
	sc->outstanding--;
	if (c->status < 0) {
		sv_close(sc, c->status);
		sv_op_free(o);
		sv_maybe_free(sc);
		return;
	}
	switch (o->role) {
	case SV_CTRL_RECV: {
		struct ft_ctrl rq = o->ctrl;
		bool good = c->len == sizeof(rq) && rq.magic == FT_MAGIC;

		/* Keep the control receive posted before serving, to keep the depth. */
		memset(&o->ctrl, 0, sizeof(o->ctrl));
		sv_post(o, 0);
		if (good)
			sv_cmd(sc, &rq);
		else
			SV_STAT(s, s->st.cmds[FT_NKINDS]++);
		break;
	}
	case SV_DATA_RECV: {
		long long bad = c->len == o->len ? ft_check(o->buf, o->len, o->ctrl.seed, 0) : 0;
		uint64_t n = c->len < o->len ? c->len : o->len;
		SV_STAT(s, bad < 0 ? s->st.verified_ok++ : s->st.verified_bad++;
			s->st.bytes_in += n);
		if (bad >= 0)
			sv_report_bad(s, "a received message", &o->ctrl, c->len, bad, o->buf);
		sv_reply(sc, o->ctrl.aid, bad < 0 ? 0 : FT_ST_BADDATA, c->len, ft_sum(o->buf, n));
		sv_op_free(o);
		break;
	}
	default:
		sv_op_free(o);
		break;
	}
	sv_maybe_free(sc);
}

static void sv_accept(struct ft_service *s, struct ferry_ep *ep)
{
	struct sv_conn *sc = calloc(1, sizeof(*sc));

	FT_ASSERT(sc, "out of memory");
	sc->svc = s;
	sc->ep = ep;
	sc->next = s->conns;
	if (s->conns)
		s->conns->prev = sc;
	s->conns = sc;
	SV_STAT(s, s->st.accepted++; s->st.conns_live++);
	for (unsigned i = 0; i < s->cfg.ctrl_depth && !sc->closed; i++)
		sv_post(sv_op_new(sc, SV_CTRL_RECV), 0);
	sv_maybe_free(sc);
}

int ft_service_create(struct ferry_ctx *ctx, const struct ft_service_cfg *cfg,
		      struct ft_service **out)
{
	struct ft_service *s = calloc(1, sizeof(*s));
	struct ferry_listen_attr la = {0};
	size_t alen;
	int rc;

	FT_ASSERT(s, "out of memory");
	s->ctx = ctx;
	if (cfg)
		s->cfg = *cfg;
	if (!s->cfg.listen_uri) {
		ft_listen_uri(s->listen_uri, sizeof(s->listen_uri), 0);
		s->cfg.listen_uri = s->listen_uri;
	}
	if (!s->cfg.ro_len)
		s->cfg.ro_len = 16u << 20;
	if (!s->cfg.wr_max)
		s->cfg.wr_max = 64u << 20;
	if (!s->cfg.ctrl_depth)
		s->cfg.ctrl_depth = 4;
	pthread_mutex_init(&s->st_lock, NULL);
	ft_tab_init(&s->tab, ctx, NULL);

	s->ro_buf = malloc(s->cfg.ro_len);
	FT_ASSERT(s->ro_buf, "out of memory");
	ft_fill(s->ro_buf, s->cfg.ro_len, FT_RO_SEED, 0);
	rc = ferry_mr_reg(ctx, s->ro_buf, s->cfg.ro_len, FERRY_ACCESS_REMOTE_READ, &s->ro_mr);
	if (rc < 0)
		goto fail;
	s->ro_blob_len = sizeof(s->ro_blob);
	rc = ferry_mr_pack(s->ro_mr, s->ro_blob, &s->ro_blob_len);
	if (rc < 0)
		goto fail;
	la.max_connections = s->cfg.max_connections;
	rc = ferry_listen(ctx, s->cfg.listen_uri, &la, &s->l);
	if (rc < 0)
		goto fail;
	alen = sizeof(s->addr);
	rc = ferry_listener_addr(s->l, s->addr, &alen);
	if (rc < 0)
		goto fail;
	*out = s;
	return 0;
fail:
	if (s->l)
		ferry_listener_close(s->l);
	if (s->ro_mr)
		ferry_mr_dereg(s->ro_mr);
	free(s->ro_buf);
	ft_tab_fini(&s->tab, "service");
	pthread_mutex_destroy(&s->st_lock);
	free(s);
	return rc;
}

const char *ft_service_addr(const struct ft_service *s)
{
	return s->addr;
}

int ft_service_step(struct ft_service *s, int timeout_ms)
{
	struct ferry_ep *ep;
	int n;

	while (s->l && ferry_listener_accept(s->l, &ep, 0) == 0)
		sv_accept(s, ep);
	n = ft_tab_poll(&s->tab, timeout_ms);
	while (s->l && ferry_listener_accept(s->l, &ep, 0) == 0)
		sv_accept(s, ep);
	return n;
}

static void *sv_thread(void *arg)
{
	struct ft_service *s = arg;

	while (!atomic_load(&s->stop))
		ft_service_step(s, 20);
	return NULL;
}

int ft_service_start_thread(struct ft_service *s)
{
	atomic_store(&s->stop, false);
	if (pthread_create(&s->thr, NULL, sv_thread, s) != 0)
		return FERRY_ENOMEM;
	s->thr_on = true;
	return 0;
}

void ft_service_stop_thread(struct ft_service *s)
{
	if (!s->thr_on)
		return;
	atomic_store(&s->stop, true);
	pthread_join(s->thr, NULL);
	s->thr_on = false;
}

void ft_service_get_stats(struct ft_service *s, struct ft_service_stats *out)
{
	pthread_mutex_lock(&s->st_lock);
	*out = s->st;
	pthread_mutex_unlock(&s->st_lock);
}

int ft_service_destroy(struct ft_service *s, int timeout_ms)
{
	uint64_t end = ft_now_ms() + (uint64_t)timeout_ms;
	int problems = 0;

	if (!s)
		return 0;
	ft_service_stop_thread(s);
	ferry_listener_close(s->l);
	s->l = NULL;
	for (struct sv_conn *sc = s->conns, *nx; sc; sc = nx) {
		nx = sc->next;
		sc->outstanding++; /* keep sc while closing it */
		sv_close(sc, FERRY_ESHUTDOWN);
		sc->outstanding--;
		sv_maybe_free(sc);
	}
	while (s->conns && ft_now_ms() < end)
		ft_tab_poll(&s->tab, 20);
	if (s->conns) {
		unsigned n = 0;
		for (struct sv_conn *sc = s->conns; sc; sc = sc->next)
			n++;
		printf("LOST service: %u endpoints still have operations in flight after "
		       "close and %d ms\n", n, timeout_ms);
		problems++;
	}
	problems += (int)s->tab.bogus;
	problems += (int)ft_tab_fini(&s->tab, "service");
	if (!s->conns) {
		ferry_mr_dereg(s->ro_mr);
		free(s->ro_buf);
	}
	/* else: leaked on purpose; a dump was printed and the test fails */
	pthread_mutex_destroy(&s->st_lock);
	free(s);
	return problems;
}
