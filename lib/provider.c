/*
 * provider.c - the static provider registry and its checks. A provider is listed here
 * and nowhere else in the core.
 */
#include "core_priv.h"

#include <stdio.h>
#include <string.h>

extern const struct ferryi_provider ferryi_tcp_provider;
#ifdef FERRY_HAVE_VERBS
extern const struct ferryi_provider ferryi_verbs_provider;
#endif
#ifdef FERRY_HAVE_OFI
extern const struct ferryi_provider ferryi_ofi_provider;
#endif

/* Preference order for auto:// and listings: RDMA first. */
static const struct ferryi_provider *const registry[] = {
#ifdef FERRY_HAVE_VERBS
	&ferryi_verbs_provider,
#endif
#ifdef FERRY_HAVE_OFI
	&ferryi_ofi_provider,
#endif
	&ferryi_tcp_provider,
};

#ifndef FERRY_VERBS_ABSENT_WHY
#define FERRY_VERBS_ABSENT_WHY "not built"
#endif
#ifndef FERRY_OFI_ABSENT_WHY
#define FERRY_OFI_ABSENT_WHY "not built"
#endif

/* Every provider ferry knows, built or not, with why it is not. */
static const struct {
	const char *name;
	const char *how;
} known[] = {
	{ "verbs", FERRY_VERBS_ABSENT_WHY },
	{ "ofi", FERRY_OFI_ABSENT_WHY },
	{ "tcp", "" },
};

int ferryi_provider_check(const struct ferryi_provider *p)
{
#define NEED(field)                                                                  \
	do {                                                                         \
		if (!p->field) {                                                     \
			ferryi_log(NULL, FERRY_LOG_ERROR,                            \
				   "provider %s: mandatory op '" #field "' missing",   \
				   p->name ? p->name : "?");                         \
			return FERRY_EINVAL;                                         \
		}                                                                    \
	} while (0)
	NEED(name);
	NEED(scheme_match);
	NEED(info);
	NEED(inst_init);
	NEED(inst_fini);
	NEED(listen);
	NEED(listen_close);
	NEED(connect);
	NEED(ep_close);
	NEED(send);
	NEED(write);
	NEED(read);
	NEED(mr_reg);
	NEED(mr_dereg);
	NEED(mr_pack);
#undef NEED
	if (!p->rndv_grant != !p->rndv_release) {
		ferryi_log(NULL, FERRY_LOG_ERROR, "provider %s: rndv_grant without rndv_release "
			   "or the other way round", p->name);
		return FERRY_EINVAL;
	}
	if (p->id == 0 || p->eager_max < 64)
		return FERRY_EINVAL;
	return 0;
}

#define TEST_PROVIDERS_MAX 2
static const struct ferryi_provider *checked[FERRYI_ARRAY_LEN(registry) + TEST_PROVIDERS_MAX];
static int nchecked;
static pthread_once_t checked_once = PTHREAD_ONCE_INIT;
static const struct ferryi_provider *test_providers[TEST_PROVIDERS_MAX];
static int ntest_providers;

static void registry_check(void)
{
	for (int i = 0; i < ntest_providers; i++)
		if (ferryi_provider_check(test_providers[i]) == 0)
			checked[nchecked++] = test_providers[i];
	for (size_t i = 0; i < FERRYI_ARRAY_LEN(registry); i++)
		if (ferryi_provider_check(registry[i]) == 0)
			checked[nchecked++] = registry[i];
}

const struct ferryi_provider *const *ferryi_providers(int *count)
{
	pthread_once(&checked_once, registry_check);
	*count = nchecked;
	return checked;
}

int ferryi_provider_register_test(const struct ferryi_provider *p)
{
	/* Only before the registry is first used: it is immutable afterwards. */
	if (nchecked || ntest_providers == TEST_PROVIDERS_MAX || ferryi_provider_check(p) < 0)
		return FERRY_EINVAL;
	test_providers[ntest_providers++] = p;
	return 0;
}

const struct ferryi_provider *ferryi_provider_by_scheme(const char *scheme)
{
	int n;
	const struct ferryi_provider *const *all = ferryi_providers(&n);
	for (int i = 0; i < n; i++)
		if (all[i]->scheme_match(scheme))
			return all[i];
	return NULL;
}

int ferry_provider_list(struct ferry_provider_info *out, int max)
{
	int n, count = 0;
	const struct ferryi_provider *const *all = ferryi_providers(&n);
	for (size_t k = 0; k < FERRYI_ARRAY_LEN(known); k++, count++) {
		if (!out || count >= max)
			continue;
		struct ferry_provider_info *info = &out[count];
		memset(info, 0, sizeof(*info));
		info->name = known[k].name;
		info->status = FERRY_ENOSYS;
		snprintf(info->detail, sizeof(info->detail), "%s", known[k].how);
		for (int i = 0; i < n; i++)
			if (strcmp(all[i]->name, known[k].name) == 0) {
				info->built = 1;
				info->status = 0;
				info->detail[0] = '\0';
				all[i]->info(info);
			}
	}
	return count;
}
