/*
 * stats.c - counters per provider instance, summed for the context, and as JSON.
 */
#include "core_priv.h"
#include "regcache.h"

#include <stdio.h>
#include <string.h>

/* One list of fields: the sum, the JSON and the docs cannot drift apart. */
#define FERRYI_STATS_FIELDS(X)                                                       \
	X(bytes_sent) X(bytes_received) X(wire_bytes_sent) X(wire_bytes_received)    \
	X(ops_posted) X(ops_completed) X(ops_failed) X(completions_discarded)       \
	X(eps_open) X(eps_pooled) X(eps_pinned) X(eps_created) X(eps_accepted)       \
	X(eps_closed) X(eps_failed) X(eps_reaped) X(connect_failures) X(reconnects)  \
	X(fallbacks) X(probes_sent) X(probes_missed) X(peers_dead)                   \
	X(protocol_errors) X(rkey_refusals) X(mrs_registered) X(compressed_in)       \
	X(compressed_out) X(msgs_discarded) X(reg_cache_state) X(reg_cache_hits)        \
	X(reg_cache_misses) X(reg_cache_uncached) X(reg_cache_evictions)             \
	X(reg_cache_invalidations) X(reg_cache_bytes) X(reg_cache_entries)         \
	X(beats_sent) X(rma_window_waits)

static void stats_add(struct ferry_stats *dst, const struct ferry_stats *src)
{
#define ADD(f) dst->f += src->f;
	FERRYI_STATS_FIELDS(ADD)
#undef ADD
}

int ferry_stats_get(struct ferry_ctx *ctx, const char *provider, struct ferry_stats *out)
{
	if (!ctx || !out)
		return FERRY_EINVAL;
	memset(out, 0, sizeof(*out));
	int found = 0;
	ferryi_ctx_lock(ctx);
	for (int i = 0; i < ctx->nprovs; i++) {
		if (provider && strcmp(provider, ctx->provs[i]->prov->name) != 0)
			continue;
		stats_add(out, &ctx->provs[i]->stats);
		found++;
	}
	/* Every provider registers every region: count regions once for the context. */
	if (!provider && ctx->nprovs)
		out->mrs_registered = ctx->provs[0]->stats.mrs_registered;
	ferryi_regcache_stats(ctx, out);
	ferryi_ctx_unlock(ctx);
	return provider && !found ? FERRY_ENOENT : 0;
}

int ferry_stats_json(struct ferry_ctx *ctx, char *buf, size_t *len)
{
	char tmp[8192];
	size_t off = 0;
	struct ferry_stats s;
	const char *names[FERRYI_MAX_PROVS];
	int nprovs;

	if (!ctx || !len || (!buf && *len))
		return FERRY_EINVAL;
	/* Providers may open meanwhile (open_on_use): the list as it is now. */
	ferryi_ctx_lock(ctx);
	nprovs = ctx->nprovs;
	for (int i = 0; i < nprovs; i++)
		names[i] = ctx->provs[i]->prov->name;
	ferryi_ctx_unlock(ctx);
	off += (size_t)snprintf(tmp + off, sizeof(tmp) - off, "{");
	for (int i = -1; i < nprovs; i++) {
		const char *name = i < 0 ? NULL : names[i];
		ferry_stats_get(ctx, name, &s);
		off += (size_t)snprintf(tmp + off, sizeof(tmp) - off, "%s\"%s\":{", i < 0 ? "" : ",",
					name ? name : "total");
		const char *sep = "";
#define JSON(f)                                                                       \
	off += (size_t)snprintf(tmp + off, sizeof(tmp) - off, "%s\"" #f "\":%llu", sep,  \
				(unsigned long long)s.f);                             \
	sep = ",";
		FERRYI_STATS_FIELDS(JSON)
#undef JSON
		off += (size_t)snprintf(tmp + off, sizeof(tmp) - off, "}");
		if (off >= sizeof(tmp))
			return FERRY_ENOBUFS;
	}
	off += (size_t)snprintf(tmp + off, sizeof(tmp) - off, "}");
	if (off >= sizeof(tmp))
		return FERRY_ENOBUFS;
	if (*len <= off) {
		*len = off;
		return FERRY_ENOBUFS;
	}
	memcpy(buf, tmp, off + 1);
	*len = off;
	return 0;
}
