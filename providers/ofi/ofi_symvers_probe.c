/*
 * Linked (never run) at configure time against the libfabric found there: the symbol
 * versions its undefined references carry are the ones ofi_lib.c asks dlvsym for
 * (providers/ofi/CMakeLists.txt).
 */
#include <rdma/fabric.h>
#include <rdma/fi_errno.h>

int main(int argc, char **argv)
{
	(void)argv;
	if (argc > 1000) { /* never: the calls are there to be linked */
		struct fi_info *info = fi_dupinfo(NULL);
		struct fid_fabric *fabric;
		(void)fi_getinfo(FI_VERSION(1, 9), NULL, NULL, 0, info, &info);
		(void)fi_fabric(info->fabric_attr, &fabric, NULL);
		fi_freeinfo(info);
		return fi_strerror(argc)[0];
	}
	return 0;
}
