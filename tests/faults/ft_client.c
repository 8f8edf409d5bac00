/*
 * ft_client.c - the client side of the test protocol: sessions and logical
 * operations with verified outcomes (see ft.h).
 *
 * A logical operation (ft_lop) is one to four ferry operations (its "subs"), posted
 * in at most two stages. It finishes when its last sub completed and no stage is
 * left; its outcome is then decided once: FAILED when any sub failed, CORRUPT when
 * every sub succeeded but the bytes (or the server's verdict on them) are wrong, OK
 * otherwise. Application ids (aid) are unique per process, so several threads may
 * share one pooled endpoint.
 */
#define _GNU_SOURCE
#include "ft.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *const ft_kind_names[FT_NKINDS] = {"send", "recv", "write", "read", "info",
					       "free"};

enum { R_CTRL_SEND = 1, R_DATA_SEND, R_DATA_RECV, R_REPLY_RECV, R_WRITE, R_READ };

static atomic_uint_fast64_t ft_aid_next = 1;

void ft_load_default(struct ft_load *l)
{
	memset(l, 0, sizeof(*l));
	l->window = 4;
	l->max_msg = 4u << 20;
	l->max_rma = 4u << 20;
	l->eager = 64u << 10;
	l->small_pct = 60;
	l->w[FT_SEND] = l->w[FT_RECV] = l->w[FT_WRITE] = l->w[FT_READ] = 1;
}

/* ------------------------------------------------------------------ counts */

void ft_counts_add_err(struct ft_counts *c, int code)
{
	for (int i = 0; i < 16; i++) {
		if (c->err_count[i] && c->err_code[i] != code)
			continue;
		c->err_code[i] = code;
		c->err_count[i]++;
		return;
	}
}

uint64_t ft_counts_total(const struct ft_counts *c, int which)
{
	const uint64_t *a = which == 0 ? c->ok : which == 1 ? c->corrupt : c->failed;
	uint64_t n = 0;

	for (int k = 0; k < FT_NKINDS; k++)
		n += a[k];
	return n;
}

void ft_counts_print(const struct ft_counts *c, const char *who)
{
	char errs[512] = "";
	size_t o = 0;

	for (int i = 0; i < 16 && c->err_count[i]; i++)
		o += (size_t)snprintf(errs + o, sizeof(errs) - o, " %s x%llu",
				      ft_err(c->err_code[i]),
				      (unsigned long long)c->err_count[i]);
	printf("# %s: ok %llu (send %llu recv %llu write %llu read %llu, %.1f MiB verified),"
	       " corrupt %llu, failed %llu%s%s\n",
	       who, (unsigned long long)ft_counts_total(c, 0), (unsigned long long)c->ok[FT_SEND],
	       (unsigned long long)c->ok[FT_RECV], (unsigned long long)c->ok[FT_WRITE],
	       (unsigned long long)c->ok[FT_READ], (double)c->bytes_ok / (1 << 20),
	       (unsigned long long)ft_counts_total(c, 1),
	       (unsigned long long)ft_counts_total(c, 2), o ? ":" : "", errs);
	fflush(stdout);
}

/* ------------------------------------------------------------------ sessions */

static void lop_sub_done(struct ft_tab *t, struct ft_op *op, const struct ferry_completion *c);

static void sess_free(struct ft_sess *s)
{
	ferry_rkey_destroy(s->ro);
	ferry_rkey_destroy(s->wr);
	free(s);
}

static void lop_link(struct ft_tab *t, struct ft_lop *l)
{
	l->prev = NULL;
	l->next = t->lops;
	if (t->lops)
		t->lops->prev = l;
	t->lops = l;
	t->lops_live++;
}

static void lop_unlink(struct ft_tab *t, struct ft_lop *l)
{
	if (l->prev)
		l->prev->next = l->next;
	else
		t->lops = l->next;
	if (l->next)
		l->next->prev = l->prev;
	t->lops_live--;
}

static struct ft_lop *lop_new(struct ft_sess *s, enum ft_kind kind, uint64_t len)
{
	struct ft_lop *l = calloc(1, sizeof(*l));

	FT_ASSERT(l, "out of memory");
	l->s = s;
	l->kind = kind;
	l->len = len;
	l->aid = atomic_fetch_add(&ft_aid_next, 1);
	l->seed = ft_rand(&s->rng);
	l->slot = -1;
	l->bad_at = -1;
	l->t_post_ns = ft_now_ns();
	l->ctrl.magic = FT_MAGIC;
	l->ctrl.aid = l->aid;
	l->ctrl.len = len;
	l->ctrl.seed = l->seed;
	s->inflight++;
	lop_link(s->tab, l);
	return l;
}

/* Posts one sub of l; returns the post's code (0: it is in flight). */
static int lop_post(struct ft_lop *l, int role)
{
	struct ft_sess *s = l->s;
	struct ft_tab *t = s->tab;
	struct ft_sub *sub = &l->sub[l->nsub];
	struct ferry_op_attr attr = {.cq = t->cq, .timeout_ms = s->load.op_timeout_ms};
	enum ferry_op_type type = role == R_DATA_RECV || role == R_REPLY_RECV ? FERRY_OP_RECV
				: role == R_WRITE			   ? FERRY_OP_WRITE
				: role == R_READ			   ? FERRY_OP_READ
									   : FERRY_OP_SEND;
	int rc;

	if (l->status < 0)
		return l->status; /* an earlier post of this op failed: post nothing more */
	if (s->closed) {
		/* The endpoint handle was given back: it must not be used any more. */
		l->status = FERRY_ENOTCONN;
		return l->status;
	}
	FT_ASSERT(l->nsub < 3, "logical op with more than 3 ferry ops");
	sub->lop = l;
	sub->role = role;
	void *uc = ft_tab_arm(t, &sub->op, type, lop_sub_done);
	switch (role) {
	case R_CTRL_SEND:
		rc = ferry_send(s->ep, &l->ctrl, sizeof(l->ctrl), FT_TAG(FT_K_CTRL, l->aid), uc,
				&attr);
		break;
	case R_DATA_SEND:
		rc = ferry_send(s->ep, l->buf, l->len, FT_TAG(FT_K_DATA, l->aid), uc, &attr);
		break;
	case R_DATA_RECV:
		rc = ferry_recv(s->ep, l->buf, l->len, FT_TAG(FT_K_DATA, l->aid), ~0ull, uc,
				&attr);
		break;
	case R_REPLY_RECV:
		rc = ferry_recv(s->ep, &l->reply, sizeof(l->reply), FT_TAG(FT_K_REPLY, l->aid),
				~0ull, uc, &attr);
		break;
	case R_WRITE:
		rc = ferry_write(s->ep, l->buf, l->len, NULL, s->wr, l->offset, uc, &attr);
		break;
	default:
		rc = ferry_read(s->ep, l->buf, l->len, NULL, s->ro, l->offset, uc, &attr);
		break;
	}
	if (rc < 0) {
		ft_tab_unarm(t, &sub->op);
		l->status = rc;
		return rc;
	}
	l->nsub++;
	l->pending++;
	return 0;
}

static void sess_fail(struct ft_sess *s, int status)
{
	if (s->state != FT_SESS_FAILED) {
		s->state = FT_SESS_FAILED;
		s->status = status;
	}
}

/* Records the outcome of a finished op and frees it. */
static void lop_finish(struct ft_lop *l)
{
	struct ft_sess *s = l->s;
	struct ft_tab *t = s->tab;
	struct ft_counts *c = t->counts;

	l->t_done_ns = ft_now_ns();
	if (l->status < 0 || l->status > 0) {
		l->outcome = 2;
	} else {
		switch (l->kind) {
		case FT_SEND:
		case FT_WRITE:
			if (!l->got_reply) {
				l->outcome = 1; /* the reply itself came back garbled */
			} else if (l->reply.status == FT_ST_BADREQ || l->reply.status < 0) {
				l->outcome = 2;
				l->status = l->reply.status < 0 ? l->reply.status : FT_ST_BADREQ;
			} else if (l->reply.status == FT_ST_BADDATA || l->reply.sum != l->sum_local ||
				   l->reply.len != l->len) {
				l->outcome = 1;
			} else {
				l->outcome = 0;
			}
			break;
		case FT_RECV:
		case FT_READ:
			l->outcome = l->data_ok ? 0 : 1;
			break;
		case FT_INFO:
			l->outcome = 0;
			break;
		default:
			l->outcome = 0;
			break;
		}
	}

	if (l->kind == FT_INFO && s->state == FT_SESS_OPENING) {
		int rc = 0;

		if (l->outcome == 0 && l->got_reply && l->reply.status == 0 &&
		    l->reply.ro_blob_len + l->reply.wr_blob_len <= sizeof(l->reply.blobs)) {
			rc = ferry_rkey_unpack(t->ctx, l->reply.blobs, l->reply.ro_blob_len, &s->ro);
			if (rc == 0)
				rc = ferry_rkey_unpack(t->ctx, l->reply.blobs + l->reply.ro_blob_len,
						       l->reply.wr_blob_len, &s->wr);
			s->ro_len = l->reply.ro_len;
			s->wr_len = l->reply.wr_len;
			s->region = l->reply.region;
		} else if (l->status < 0) {
			rc = l->status;
		} else if (l->got_reply && l->reply.status != 0) {
			/* The server refused the request (a region larger than it allows). */
			rc = l->reply.status < 0 ? l->reply.status : FERRY_EINVAL;
		} else {
			rc = FERRY_EPROTO; /* the reply came back garbled */
		}
		if (rc == 0 && !s->closed)
			s->state = FT_SESS_READY;
		else
			sess_fail(s, rc ? rc : FERRY_ESHUTDOWN);
	}

	if (c && l->kind < FT_INFO) {
		if (l->outcome == 0) {
			c->ok[l->kind]++;
			c->bytes_ok += l->len;
		} else if (l->outcome == 1) {
			c->corrupt[l->kind]++;
		} else {
			c->failed[l->kind]++;
			ft_counts_add_err(c, l->status);
		}
	}
	if (l->outcome == 2) {
		s->failed++;
		if (l->status < 0 && (l->kind != FT_FREE))
			sess_fail(s, l->status);
	} else {
		s->done++;
	}
	if (t->on_lop)
		t->on_lop(t, l);

	if (l->slot >= 0)
		s->slots_busy &= ~(1ull << l->slot);
	lop_unlink(t, l);
	/* The buffer is the application's again: scribble over it, as an application that
	 * reuses it would, so that a transfer still reading it shows up as wrong bytes. */
	if (l->buf)
		memset(l->buf, 0xEE, l->len);
	free(l->buf);
	free(l);
	s->inflight--;
	if (s->closed && s->inflight == 0) {
		/* unlink from the zombie list, then free */
		for (struct ft_sess **pz = &t->zombies; *pz; pz = &(*pz)->znext) {
			if (*pz == s) {
				*pz = s->znext;
				break;
			}
		}
		sess_free(s);
	}
}

/* Stage 2 of a write: ask the server to verify what landed. */
static void lop_write_verify(struct ft_lop *l)
{
	l->stage = 2;
	l->ctrl.cmd = FT_CMD_VERIFY;
	l->ctrl.offset = l->offset;
	l->ctrl.region = l->s->region;
	if (lop_post(l, R_REPLY_RECV) == 0)
		lop_post(l, R_CTRL_SEND);
}

static void lop_sub_done(struct ft_tab *t, struct ft_op *op, const struct ferry_completion *c)
{
	struct ft_sub *sub = (struct ft_sub *)op;
	struct ft_lop *l = sub->lop;

	(void)t;
	l->pending--;
	if (c->status < 0) {
		if (l->status == 0)
			l->status = c->status;
	} else {
		switch (sub->role) {
		case R_REPLY_RECV:
			l->got_reply = c->len >= offsetof(struct ft_reply, blobs) &&
				       l->reply.magic == FT_MAGIC && l->reply.aid == l->aid;
			break;
		case R_DATA_RECV:
		case R_READ: {
			uint64_t word0 = sub->role == R_READ ? l->offset / 8 : 0;
			uint64_t seed = sub->role == R_READ ? FT_RO_SEED : l->seed;

			l->data_checked = true;
			l->bad_at = c->len == l->len ? ft_check(l->buf, l->len, seed, word0) : 0;
			l->data_ok = l->bad_at < 0;
			break;
		}
		default:
			break;
		}
	}
	if (l->pending > 0)
		return;
	if (l->kind == FT_WRITE && l->stage == 1 && l->status == 0) {
		lop_write_verify(l);
		if (l->pending > 0)
			return;
	}
	lop_finish(l);
}

int ft_sess_open(struct ft_tab *t, struct ferry_ep *ep, const struct ft_load *load,
		 uint64_t seed, struct ft_sess **out)
{
	struct ft_sess *s = calloc(1, sizeof(*s));
	struct ft_lop *l;

	FT_ASSERT(s, "out of memory");
	s->tab = t;
	s->ep = ep;
	s->load = *load;
	if (s->load.window == 0 || s->load.window > 64)
		s->load.window = 4;
	if (!s->load.eager)
		s->load.eager = 64u << 10;
	s->rng = seed ? seed : 1;
	s->state = FT_SESS_OPENING;
	*out = s;

	l = lop_new(s, FT_INFO, s->load.window * (s->load.max_rma ? s->load.max_rma : 1));
	l->ctrl.cmd = FT_CMD_INFO;
	if (lop_post(l, R_REPLY_RECV) == 0)
		lop_post(l, R_CTRL_SEND);
	int rc = l->status;
	if (l->pending == 0)
		lop_finish(l);
	return rc;
}

int ft_sess_wait_ready(struct ft_sess *s, int timeout_ms)
{
	uint64_t end = ft_now_ms() + (uint64_t)timeout_ms;

	while (s->state == FT_SESS_OPENING) {
		uint64_t now = ft_now_ms();
		if (now >= end)
			return FERRY_ETIMEDOUT;
		int rc = ft_tab_poll(s->tab, (int)(end - now < 50 ? end - now : 50));
		if (rc < 0)
			return rc;
	}
	return s->state == FT_SESS_READY ? 0 : s->status;
}

bool ft_sess_can_post(const struct ft_sess *s)
{
	return s->state == FT_SESS_READY && !s->closed && s->inflight < s->load.window;
}

static uint64_t sess_rand_len(struct ft_sess *s, uint64_t max)
{
	uint64_t eager = s->load.eager < max ? s->load.eager : max;

	if (ft_rand(&s->rng) % 100 < s->load.small_pct || max <= eager)
		return ft_rand_range(&s->rng, 1, eager);
	return ft_rand_range(&s->rng, eager + 1, max);
}

int ft_sess_post(struct ft_sess *s, enum ft_kind kind, uint64_t len)
{
	struct ft_lop *l;
	int rc;

	if (s->state != FT_SESS_READY || s->closed)
		return s->state == FT_SESS_FAILED ? s->status : FERRY_ENOTCONN;
	if (len == 0)
		len = sess_rand_len(s, kind == FT_SEND || kind == FT_RECV ? s->load.max_msg
									   : s->load.max_rma);
	if (kind == FT_WRITE && len > s->load.max_rma)
		len = s->load.max_rma;
	if (kind == FT_READ && len > s->ro_len)
		len = s->ro_len;
	l = lop_new(s, kind, len);
	l->buf = malloc(len);
	FT_ASSERT(l->buf, "out of memory (%llu bytes)", (unsigned long long)len);
	l->stage = 1;
	switch (kind) {
	case FT_SEND:
		ft_fill(l->buf, len, l->seed, 0);
		l->sum_local = ft_sum(l->buf, len);
		l->ctrl.cmd = FT_CMD_SEND;
		if (lop_post(l, R_REPLY_RECV) == 0 && lop_post(l, R_CTRL_SEND) == 0)
			lop_post(l, R_DATA_SEND);
		break;
	case FT_RECV:
		l->ctrl.cmd = FT_CMD_RECV;
		if (lop_post(l, R_DATA_RECV) == 0)
			lop_post(l, R_CTRL_SEND);
		break;
	case FT_WRITE:
		for (int i = 0; i < (int)s->load.window; i++) {
			if (!(s->slots_busy & (1ull << i))) {
				l->slot = i;
				break;
			}
		}
		FT_ASSERT(l->slot >= 0, "no free write slot (window %u)", s->load.window);
		s->slots_busy |= 1ull << l->slot;
		l->offset = (uint64_t)l->slot * s->load.max_rma;
		ft_fill(l->buf, len, l->seed, 0);
		l->sum_local = ft_sum(l->buf, len);
		lop_post(l, R_WRITE);
		break;
	case FT_READ:
		l->offset = ft_rand_range(&s->rng, 0, (s->ro_len - len) / 8) * 8;
		lop_post(l, R_READ);
		break;
	default:
		FT_ASSERT(0, "ft_sess_post: kind %d", kind);
	}
	rc = l->status;
	if (l->pending == 0)
		lop_finish(l);
	return rc;
}

int ft_sess_post_random(struct ft_sess *s)
{
	unsigned tot = 0, r;

	for (int k = 0; k < 4; k++)
		tot += s->load.w[k];
	if (tot == 0)
		return FERRY_EINVAL;
	r = (unsigned)(ft_rand(&s->rng) % tot);
	for (int k = 0; k < 4; k++) {
		if (r < s->load.w[k])
			return ft_sess_post(s, (enum ft_kind)k, 0);
		r -= s->load.w[k];
	}
	return FERRY_EINVAL;
}

void ft_sess_close(struct ft_sess *s, bool close_ep, bool free_region)
{
	struct ft_tab *t = s->tab;

	if (s->closed)
		return;
	if (free_region && s->state == FT_SESS_READY && ferry_ep_status(s->ep) == 0) {
		struct ft_lop *l = lop_new(s, FT_FREE, 0);

		l->ctrl.cmd = FT_CMD_FREE;
		l->ctrl.region = s->region;
		lop_post(l, R_CTRL_SEND);
		if (l->pending == 0)
			lop_finish(l);
	}
	s->closed = true;
	if (close_ep)
		ferry_ep_close(s->ep);
	else
		ferry_ep_release(s->ep);
	if (s->inflight == 0) {
		sess_free(s);
		return;
	}
	s->znext = t->zombies;
	t->zombies = s;
}

bool ft_tab_wait_idle(struct ft_tab *t, int timeout_ms, const char *who)
{
	uint64_t end = ft_now_ms() + (uint64_t)timeout_ms;

	while (t->lops_live > 0 || t->live > 0) {
		uint64_t now = ft_now_ms();
		if (now >= end) {
			printf("HANG %s: operations did not complete within %d ms\n", who,
			       timeout_ms);
			ft_tab_dump(t, who, 16);
			return false;
		}
		ft_tab_poll(t, (int)(end - now < 50 ? end - now : 50));
	}
	return true;
}

bool ft_run(struct ft_tab *t, struct ft_sess **ss, int nsess, uint64_t nops, int timeout_ms)
{
	uint64_t end = ft_now_ms() + (uint64_t)timeout_ms, posted = 0;

	while (posted < nops) {
		bool any = false;

		for (int i = 0; i < nsess && posted < nops; i++) {
			while (posted < nops && ft_sess_can_post(ss[i])) {
				ft_sess_post_random(ss[i]);
				posted++;
				any = true;
			}
			if (ss[i]->state == FT_SESS_FAILED)
				any = true; /* nothing more will go there */
		}
		bool all_failed = true;
		for (int i = 0; i < nsess; i++)
			all_failed = all_failed && ss[i]->state == FT_SESS_FAILED;
		if (all_failed)
			break;
		uint64_t now = ft_now_ms();
		if (now >= end)
			break;
		if (!any || t->lops_live > 0)
			ft_tab_poll(t, (int)(end - now < 50 ? end - now : 50));
	}
	uint64_t now = ft_now_ms();
	return ft_tab_wait_idle(t, now < end ? (int)(end - now) : 0, "ft_run");
}
