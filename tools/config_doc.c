/*
 * config_doc - prints every FERRY_* variable with its default, from the library's own
 * table (ferryi_config_describe, lib/config.c). Not installed: the test
 * docs.readme_config compares README.md's configuration table against this output,
 * so the README cannot drift from what the library parses.
 */
#include "config.h"

#include <stdio.h>

int main(void)
{
	return ferryi_config_describe(NULL, stdout) == 0 ? 0 : 1;
}
