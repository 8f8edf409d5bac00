/*
 * ofi_has_verbs.c - configure-time probe (try_run in CMakeLists.txt): exits 0 when
 * the libfabric we link has its verbs provider compiled in, whether or not this
 * machine has an RDMA device.
 *
 * fi_info -l cannot tell: it lists only providers that found a device. But a
 * provider defines its parameters (FI_VERBS_*) when libfabric loads it, before it
 * looks for devices, so fi_getparams shows whether verbs is there at all.
 */
#include <rdma/fabric.h>
#include <strings.h>

int main(void)
{
	struct fi_param *params = NULL;
	int n = 0, found = 0;

	if (fi_getparams(&params, &n) != 0)
		return 2;
	for (int i = 0; i < n && !found; i++)
		found = params[i].name && strncasecmp(params[i].name, "FI_VERBS_", 9) == 0;
	fi_freeparams(params);
	return found ? 0 : 1;
}
