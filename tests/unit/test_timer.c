/*
 * test_timer.c - the context's deadline min-heap (lib/timer.c): order under many
 * random deadlines, equal deadlines in arming order, cancel of arbitrary timers, and
 * callbacks that re-arm, arm or cancel; and who runs due timers (the application's
 * passes, or the poller when it makes none). Runs on a context with the fake clock and no
 * poller thread, so only the test moves time.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "mock_provider.h"

#include <stdlib.h>
#include <string.h>

#define MAX_TIMERS 4096
#define MS 1000000ull

struct tt {
	struct ferryi_timer t;
	int id;
	int fired;
	uint64_t due;                  /* what the test armed it for            */
	void (*then)(struct tt *x);    /* extra work inside the callback        */
	struct tt *other;
	int limit;
};

static struct ferry_ctx *ctx;
static int order[MAX_TIMERS * 4];
static int norder;

static void tt_fire(struct ferryi_timer *t)
{
	struct tt *x = ferryi_container_of(t, struct tt, t);
	x->fired++;
	if (norder < (int)FERRYI_ARRAY_LEN(order))
		order[norder++] = x->id;
	if (x->then)
		x->then(x);
}

static void tt_init(struct tt *x, int id)
{
	memset(x, 0, sizeof(*x));
	x->id = id;
	ferryi_timer_init(&x->t, tt_fire);
}

static void arm(struct tt *x, uint64_t due)
{
	x->due = due;
	ferryi_ctx_lock(ctx);
	ferryi_timer_arm(ctx, &x->t, due);
	ferryi_ctx_unlock(ctx);
}

static void cancel(struct tt *x)
{
	ferryi_ctx_lock(ctx);
	ferryi_timer_cancel(ctx, &x->t);
	ferryi_ctx_unlock(ctx);
}

static void run_timers(void)
{
	ferryi_ctx_lock(ctx);
	ferryi_timers_run(ctx, ferryi_now_ns(ctx));
	ferryi_ctx_unlock(ctx);
}

/* The end of every test: nothing of the context leaked. */
static void done(void)
{
	mt_assert_clean(ctx);
}

static uint64_t next_due(void)
{
	ferryi_ctx_lock(ctx);
	uint64_t n = ferryi_timers_next(ctx);
	ferryi_ctx_unlock(ctx);
	return n;
}

static bool tless(const struct ferryi_timer *a, const struct ferryi_timer *b)
{
	return a->due_ns < b->due_ns || (a->due_ns == b->due_ns && a->seq < b->seq);
}

/* Structural invariants: back-indices right, no child before its parent. */
static void heap_check(void)
{
	ferryi_ctx_lock(ctx);
	uint32_t len = ctx->heap_len;
	bool idx_ok = true, order_ok = true;
	for (uint32_t i = 0; i < len; i++) {
		idx_ok &= ctx->heap[i]->heap_idx == i;
		if (i > 0)
			order_ok &= !tless(ctx->heap[i], ctx->heap[(i - 1) / 2]);
	}
	ferryi_ctx_unlock(ctx);
	assert_true(idx_ok);
	assert_true(order_ok);
}

static int group_setup(void **state)
{
	(void)state;
	return mock_register();
}

static int setup(void **state)
{
	(void)state;
	mock_reset();
	ctx = mt_ctx(NULL, true);
	norder = 0;
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	ferry_ctx_destroy(ctx);
	ctx = NULL;
	return 0;
}

/* ------------------------------------------------------------------ order */

static struct tt *sort_base;
static int by_due_then_arming(const void *a, const void *b)
{
	const struct tt *x = &sort_base[*(const int *)a], *y = &sort_base[*(const int *)b];
	if (x->due != y->due)
		return x->due < y->due ? -1 : 1;
	return x->id - y->id; /* armed in id order */
}

static void test_heap_order_random(void **state)
{
	(void)state;
	enum { N = 2000 };
	static struct tt t[N];
	static int expect[N];
	uint64_t rs = 42, base = mt_clock_now();

	/* Millisecond deadlines in one second: plenty of ties. */
	for (int i = 0; i < N; i++) {
		tt_init(&t[i], i);
		arm(&t[i], base + 1 * MS + (mt_rand(&rs) % 1000) * MS);
		expect[i] = i;
		if (i % 97 == 0)
			heap_check();
	}
	heap_check();
	sort_base = t;
	qsort(expect, N, sizeof(expect[0]), by_due_then_arming);
	assert_true(next_due() == t[expect[0]].due);

	/* Nothing is due yet. */
	run_timers();
	assert_int_equal(norder, 0);

	/* Jump forward irregularly; after each run exactly the due ones have fired. */
	while (norder < N) {
		mt_clock_advance_ms(1 + mt_rand(&rs) % 37);
		run_timers();
		uint64_t now = mt_clock_now();
		for (int i = 0; i < N; i++)
			assert_int_equal(t[i].fired, t[i].due <= now ? 1 : 0);
		if (norder < N)
			assert_true(next_due() == t[expect[norder]].due);
		heap_check();
	}
	assert_int_equal(norder, N);
	for (int i = 0; i < N; i++)
		assert_int_equal(order[i], expect[i]);
	assert_true(next_due() == UINT64_MAX);
	for (int i = 0; i < N; i++)
		assert_false(ferryi_timer_armed(&t[i].t));
	done();
}

static void test_equal_deadlines_keep_arming_order(void **state)
{
	(void)state;
	enum { N = 200 };
	static struct tt t[N + 1];
	uint64_t due = mt_clock_now() + 50 * MS;

	for (int i = 0; i < N; i++) {
		tt_init(&t[i], i);
		arm(&t[i], due);
	}
	/* Re-arming for the same deadline moves a timer behind the others. */
	arm(&t[0], due);
	arm(&t[50], due);
	/* An earlier deadline armed last still goes first. */
	tt_init(&t[N], N);
	arm(&t[N], due - 1);
	heap_check();

	mt_clock_advance_ms(50);
	run_timers();
	assert_int_equal(norder, N + 1);
	int k = 0;
	assert_int_equal(order[k++], N);
	for (int i = 1; i < N; i++)
		if (i != 50)
			assert_int_equal(order[k++], i);
	assert_int_equal(order[k++], 0);
	assert_int_equal(order[k++], 50);
	done();
}

/* ------------------------------------------------------------------ cancel */

static void test_cancel_arbitrary(void **state)
{
	(void)state;
	enum { N = 1000 };
	static struct tt t[N];
	static bool cancelled[N];
	uint64_t rs = 7, base = mt_clock_now();

	for (int i = 0; i < N; i++) {
		tt_init(&t[i], i);
		cancelled[i] = false;
		arm(&t[i], base + (1 + mt_rand(&rs) % 500) * MS);
	}
	/* The root, the last slot, then random ones (some twice). */
	for (int round = 0; round < 450; round++) {
		int victim;
		ferryi_ctx_lock(ctx);
		if (round == 0)
			victim = ferryi_container_of(ctx->heap[0], struct tt, t)->id;
		else if (round == 1)
			victim = ferryi_container_of(ctx->heap[ctx->heap_len - 1], struct tt, t)->id;
		else
			victim = (int)(mt_rand(&rs) % N);
		ferryi_ctx_unlock(ctx);
		cancel(&t[victim]);
		cancelled[victim] = true;
		assert_false(ferryi_timer_armed(&t[victim].t));
		if (round % 25 == 0)
			heap_check();
	}
	heap_check();
	/* Cancelling a timer that was never armed, or twice, is harmless. */
	struct tt never;
	tt_init(&never, -1);
	cancel(&never);
	cancel(&never);
	/* A cancelled timer can be armed again. */
	int again = -1;
	for (int i = 0; i < N && again < 0; i++)
		if (cancelled[i])
			again = i;
	arm(&t[again], base + 1000 * MS);
	cancelled[again] = false;
	heap_check();

	mt_clock_advance_ms(1000);
	run_timers();
	int expected = 0;
	for (int i = 0; i < N; i++) {
		assert_int_equal(t[i].fired, cancelled[i] ? 0 : 1);
		expected += !cancelled[i];
	}
	assert_int_equal(norder, expected);
	for (int i = 1; i < norder; i++) {
		const struct tt *a = &t[order[i - 1]], *b = &t[order[i]];
		assert_true(a->due < b->due || (a->due == b->due && a->t.seq < b->t.seq));
	}
	assert_true(next_due() == UINT64_MAX);
	done();
}

/* ------------------------------------------------------------------ callbacks */

static void rearm_periodic(struct tt *x)
{
	/* ctx lock held: the callback runs inside ferryi_timers_run */
	x->due += 100 * MS;
	ferryi_timer_arm(ctx, &x->t, x->due);
}

static void cancel_other(struct tt *x)
{
	ferryi_timer_cancel(ctx, &x->other->t);
}

static void arm_other_later(struct tt *x)
{
	x->other->due = x->due + 5 * MS;
	ferryi_timer_arm(ctx, &x->other->t, x->other->due);
}

static void test_rearm_from_callback(void **state)
{
	(void)state;
	/* static: a failed assertion leaves them armed until the teardown's destroy */
	static struct tt periodic, oneshot, a, b, c, d;
	uint64_t base = mt_clock_now();

	tt_init(&periodic, 1);
	periodic.then = rearm_periodic;
	arm(&periodic, base + 100 * MS);
	tt_init(&oneshot, 2);
	arm(&oneshot, base + 250 * MS);
	/* a and b are due together; a (armed first) cancels b before b can run. */
	tt_init(&a, 3);
	tt_init(&b, 4);
	a.then = cancel_other;
	a.other = &b;
	arm(&a, base + 420 * MS);
	arm(&b, base + 420 * MS);
	/* c arms d, which did not exist in the heap when the pass began. */
	tt_init(&c, 5);
	tt_init(&d, 6);
	c.then = arm_other_later;
	c.other = &d;
	arm(&c, base + 600 * MS);

	for (int step = 0; step < 100; step++) {
		mt_clock_advance_ms(10);
		run_timers();
		heap_check();
	}
	/* 1000 ms of a 100 ms period: ten runs, and it is armed for the eleventh. */
	assert_int_equal(periodic.fired, 10);
	assert_true(ferryi_timer_armed(&periodic.t));
	assert_true(next_due() == base + 1100 * MS);
	assert_int_equal(oneshot.fired, 1);
	assert_int_equal(a.fired, 1);
	assert_int_equal(b.fired, 0);
	assert_false(ferryi_timer_armed(&b.t));
	assert_int_equal(c.fired, 1);
	assert_int_equal(d.fired, 1);
	/* Order: the one-shot between the periodic's 2nd and 3rd run. */
	int seen_periodic = 0;
	for (int i = 0; i < norder; i++) {
		if (order[i] == 1)
			seen_periodic++;
		if (order[i] == 2)
			assert_int_equal(seen_periodic, 2);
	}
	cancel(&periodic);
	assert_true(next_due() == UINT64_MAX);
	done();
}

static void rearm_same_deadline(struct tt *x)
{
	/* "Retry at the same deadline": a due time that has already passed. */
	if (x->fired < x->limit)
		ferryi_timer_arm(ctx, &x->t, x->due);
}

/*
 * A callback that re-arms its timer for a time that has already passed runs again in
 * the next pass, not in this one: with a clock that does not move, the old loop ran it
 * endlessly (found by this test; lib/timer.c now stops at timers armed during the
 * pass). The callback stops after `limit` runs so a regression fails instead of hangs.
 */
static void test_rearm_past_due_runs_once_per_pass(void **state)
{
	(void)state;
	static struct tt x;

	tt_init(&x, 1);
	x.then = rearm_same_deadline;
	x.limit = 50;
	arm(&x, mt_clock_now() + 10 * MS);
	mt_clock_advance_ms(10);
	run_timers();
	assert_int_equal(x.fired, 1);
	run_timers();
	assert_int_equal(x.fired, 2);
	cancel(&x);
	done();
}

/*
 * BUG (lib/timer.c, ferryi_timers_run): every timer due when a pass begins must run
 * in that pass, whatever the callbacks arm. The pass now stops at the first heap root
 * armed during the pass; a timer that re-arms itself for a past deadline sorts before
 * the others that were already due and holds them back -- pass after pass, as long as
 * it keeps doing so (starvation). libuv moves the due timers to a ready list first.
 */
static void test_rearm_past_due_does_not_starve_others(void **state)
{
	(void)state;
	static struct tt x, y;
	uint64_t base = mt_clock_now();

	tt_init(&x, 1);
	x.then = rearm_same_deadline;
	x.limit = 50;
	arm(&x, base + 5 * MS);
	tt_init(&y, 2);
	arm(&y, base + 10 * MS);
	mt_clock_advance_ms(10);
	run_timers();
	assert_int_equal(x.fired, 1);
	assert_int_equal(y.fired, 1);
	cancel(&x);
	done();
}

/* ------------------------------------------------------------------ who runs them */

/* One tick of the poller thread (stopped here), as poller_main runs it. */
static uint64_t poller_tick(void)
{
	ferryi_ctx_lock(ctx);
	uint64_t next = ferryi_poller_tick(ctx);
	ferryi_ctx_unlock(ctx);
	return next;
}

/*
 * While the application runs progress passes, due timers are its passes' work, not
 * the poller's: a timer callback may do a lot (an ofi retry drained a port and made
 * shm copies on the poller thread). Counted in passes, so that a pass longer than the
 * poller's 10 ms tick still counts as the application's.
 */
static void test_poller_leaves_timers_to_a_progressing_application(void **state)
{
	(void)state;
	struct tt x;
	tt_init(&x, 1);
	arm(&x, mt_clock_now() + 1 * MS);
	assert_true(ferry_progress(ctx) >= 0); /* the application's pass: not due yet */
	mt_clock_advance_ms(50);               /* ... and a long one, say */
	uint64_t next = poller_tick();
	assert_int_equal(x.fired, 0);
	/* It does not spin on the due timer either: it looks again a tick later. */
	assert_true(next > mt_clock_now());
	mt_clock_advance_ms(5);
	poller_tick();
	assert_int_equal(x.fired, 0);
	mt_clock_advance_ms(10); /* no pass for a whole tick: the poller takes over */
	poller_tick();
	assert_int_equal(x.fired, 1);
	done();
}

/* An application that never progresses gets its timers from the poller at once. */
static void test_poller_runs_timers_without_application_passes(void **state)
{
	(void)state;
	struct tt x;
	tt_init(&x, 1);
	mt_clock_advance_ms(100); /* whatever passes setup made are a tick old */
	poller_tick();
	arm(&x, mt_clock_now() + 1 * MS);
	mt_clock_advance_ms(2);
	poller_tick();
	assert_int_equal(x.fired, 1);
	/* Its own pass does not count as the application's. */
	arm(&x, mt_clock_now() + 1 * MS);
	mt_clock_advance_ms(2);
	poller_tick();
	assert_int_equal(x.fired, 2);
	done();
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_heap_order_random, setup, teardown),
		cmocka_unit_test_setup_teardown(test_equal_deadlines_keep_arming_order, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_cancel_arbitrary, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rearm_from_callback, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rearm_past_due_runs_once_per_pass, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_rearm_past_due_does_not_starve_others, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_poller_leaves_timers_to_a_progressing_application,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_poller_runs_timers_without_application_passes,
						setup, teardown),
	};
	return cmocka_run_group_tests_name("unit.timer", tests, group_setup, NULL);
}
