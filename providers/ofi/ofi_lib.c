/*
 * ofi_lib.c - libfabric, opened when the provider is first used.
 *
 * libferry does not link libfabric. A program that never opens the ofi provider (no
 * context, or FERRY_PROVIDERS without ofi) should not pay for it, and libfabric is
 * expensive to load: Debian's build pulls in libinfinipath (psm), whose constructor
 * sleeps about 0.2 s (docs/RELIABILITY.md). Opened here, it costs only the contexts
 * that use it, libferry loads on a machine without libfabric (the provider then
 * reports why it is absent), and FERRY_OFI_LIBRARY can pick another build of it.
 *
 * The functions are looked up with dlvsym at the symbol versions that a link against
 * the headers we were compiled with binds to (CMake reads them from a probe:
 * providers/ofi/CMakeLists.txt). A newer libfabric then hands us the functions whose
 * structure layouts match our headers, as the dynamic linker would have.
 *
 * The library is never closed: libfabric's providers keep threads and state beyond
 * fi_close, and code that another context may still run cannot be unmapped.
 *
 * Loading it must not change the process's signal handling. Debian's libinfinipath
 * installs its own handlers for SIGINT, SIGTERM, SIGSEGV, SIGBUS, SIGILL and SIGABRT
 * in its constructor (a backtrace, then exit(1)): loaded at start-up, an application
 * that set its handlers in main() overrode them; loaded here, inside the first
 * context, it would replace the application's (a SIGTERM meant for an orderly
 * shutdown then kills the process at once) and a sanitizer's. Every disposition
 * that the load changed is put back.
 */
#define _GNU_SOURCE
#include "ofi.h"

#include <dlfcn.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct ofi_lib ofi_lib;

static pthread_once_t lib_once = PTHREAD_ONCE_INIT;
static int lib_status;
static char lib_why[256];

/* FERRY_OFI_LIBRARY, or NULL when unset or empty. */
static const char *lib_chosen(void)
{
	const char *env = getenv("FERRY_OFI_LIBRARY");
	return env && env[0] ? env : NULL;
}

bool ofi_lib_chosen(void)
{
	return lib_chosen() != NULL;
}

/* dlvsym when the build found a version for the symbol, dlsym when libfabric had none. */
static void *lib_sym(void *h, const char *name, const char *version)
{
	return version[0] ? dlvsym(h, name, version) : dlsym(h, name);
}

/* libfabric's parameters that ferry sets unless the user did; libfabric reads them
 * once, when first used, so they are set before it is opened. */
static void lib_env_defaults(void)
{
	/*
	 * rxm over verbs sizes its CQ from the universe size; rxe (soft-RoCE) refuses
	 * the default (its CQs stop at 32767 entries).
	 */
	setenv("FI_UNIVERSE_SIZE", "64", 0);
	/*
	 * rxm over verbs posts its receive buffers per connection unless told to share
	 * one receive context (tcp shares by default). Per connection, libfabric 1.17
	 * crashes closing an endpoint whose connections still have flushed receives in
	 * the verbs CQ: rxm_close_conn closes the verbs endpoint, then drains the CQ and
	 * reposts those buffers to the endpoint it just closed. Shared, they go back to
	 * the shared context, which is still there.
	 */
	setenv("FI_OFI_RXM_USE_SRX", "1", 0);
	/*
	 * With a shared receive context rxm preposts FI_OFI_RXM_MSG_RX_SIZE bounce
	 * buffers (default 4096 with srx) of FI_OFI_RXM_BUFFER_SIZE (16 KiB) each, when
	 * the endpoint is enabled: 64 MiB allocated and zeroed per port, in four chunks
	 * of 1024 (rxm's bufpool chunk), inside the first ferry_connect of a context
	 * (its client port) and inside ferry_listen. ferry never has more than
	 * OFI_CREDITS messages in flight per connection and posts OFI_RX_DEPTH receives
	 * per port, so one chunk is plenty. On tcp a shared receive context that runs
	 * dry only leaves bytes in the socket; on verbs the sender retries (RNR). Under
	 * ThreadSanitizer every zeroed byte also goes through its shadow memory: the
	 * client port took 0.30 s of an idle connect's 0.49 s, and a connect under load
	 * overran the tests' 2 s deadline (docs/RELIABILITY.md).
	 */
	setenv("FI_OFI_RXM_MSG_RX_SIZE", "1024", 0);
}

/* Signals whose dispositions we can read (glibc keeps a few for itself). */
struct lib_sigs {
	struct sigaction act[_NSIG];
	bool known[_NSIG];
};

static void lib_sigs_save(struct lib_sigs *s)
{
	for (int sig = 1; sig < _NSIG; sig++)
		s->known[sig] = sig != SIGKILL && sig != SIGSTOP &&
				sigaction(sig, NULL, &s->act[sig]) == 0;
}

/* Puts back what changed since lib_sigs_save; lists the signals' numbers in what. */
static void lib_sigs_restore(const struct lib_sigs *s, char *what, size_t len)
{
	size_t used = 0;

	what[0] = '\0';
	for (int sig = 1; sig < _NSIG; sig++) {
		struct sigaction now;
		if (!s->known[sig] || sigaction(sig, NULL, &now) != 0)
			continue;
		bool same = now.sa_flags == s->act[sig].sa_flags &&
			    (now.sa_flags & SA_SIGINFO ?
				     now.sa_sigaction == s->act[sig].sa_sigaction :
				     now.sa_handler == s->act[sig].sa_handler);
		if (same || sigaction(sig, &s->act[sig], NULL) != 0)
			continue;
		int n = snprintf(what + used, len - used, "%s%d", used ? " " : "", sig);
		if (n > 0 && (size_t)n < len - used)
			used += (size_t)n;
	}
}

static void lib_load(void)
{
	static const struct {
		const char *name;
		const char *version;
		size_t offset;
	} syms[] = {
		{ "fi_getinfo", OFI_SYMVER_FI_GETINFO, offsetof(struct ofi_lib, getinfo) },
		{ "fi_freeinfo", OFI_SYMVER_FI_FREEINFO, offsetof(struct ofi_lib, freeinfo) },
		{ "fi_dupinfo", OFI_SYMVER_FI_DUPINFO, offsetof(struct ofi_lib, dupinfo) },
		{ "fi_fabric", OFI_SYMVER_FI_FABRIC, offsetof(struct ofi_lib, fabric) },
		{ "fi_strerror", OFI_SYMVER_FI_STRERROR, offsetof(struct ofi_lib, strerror) },
	};
	const char *name = lib_chosen() ? lib_chosen() : OFI_LIB_SONAME;
	struct ofi_lib lib;

	lib_env_defaults();
	static struct lib_sigs sigs; /* ~10 KiB: not on an application thread's stack */
	char restored[128];
	lib_sigs_save(&sigs);
	void *h = dlopen(name, RTLD_NOW | RTLD_LOCAL);
	lib_sigs_restore(&sigs, restored, sizeof(restored));
	if (restored[0])
		FERRYI_INFO(NULL, "ofi: loading %s changed the handlers of signals %s; put back",
			    name, restored);
	if (!h) {
		snprintf(lib_why, sizeof(lib_why), "dlopen: %s", dlerror());
		lib_status = FERRY_ENODEV;
		return;
	}
	for (size_t i = 0; i < FERRYI_ARRAY_LEN(syms); i++) {
		void *fn = lib_sym(h, syms[i].name, syms[i].version);
		if (!fn) {
			snprintf(lib_why, sizeof(lib_why),
				 "%s has no %s%s%s (built against libfabric %d.%d)", name,
				 syms[i].name, syms[i].version[0] ? "@" : "", syms[i].version,
				 FI_MAJOR_VERSION, FI_MINOR_VERSION);
			dlclose(h); /* nothing of it was used */
			lib_status = FERRY_ENODEV;
			return;
		}
		/* POSIX guarantees that a dlsym result converts to a function pointer. */
		memcpy((char *)&lib + syms[i].offset, &fn, sizeof(fn));
	}
	ofi_lib = lib;
}

int ofi_lib_open(const char **why)
{
	pthread_once(&lib_once, lib_load);
	if (why)
		*why = lib_why;
	return lib_status;
}
