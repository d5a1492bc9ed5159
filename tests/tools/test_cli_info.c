/*
 * test_cli_info.c - `hadal info --transports` lists the transports compiled in, each with its
 * declared capabilities and whether it can run here (tcp always can).
 */
#include "hd_test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

HD_TEST(info_transports_lists_tcp)
{
    const char *bd = getenv("HD_BUILD_DIR");
    char cmd[1200], out[8192] = "";
    size_t n = 0;
    snprintf(cmd, sizeof(cmd), "%s/tools/hadal info --transports", bd ? bd : "../..");
    FILE *p = popen(cmd, "r");
    HD_CHECK_TRUE(p != NULL);
    if (p == NULL) {
        return;
    }
    n = fread(out, 1, sizeof(out) - 1, p);
    out[n] = '\0';
    int rc = pclose(p);
    HD_CHECK_INT_EQ(rc, 0);
    const char *tcp = strstr(out, "\ntcp ");
    HD_CHECK_MSG(tcp != NULL, "no tcp line in:\n%s", out);
    if (tcp != NULL) {
        char line[256];
        sscanf(tcp + 1, "%255[^\n]", line);
        HD_CHECK_MSG(strstr(line, " yes ") != NULL && strstr(line, "p2p") != NULL &&
                         strstr(line, "host-mem") != NULL,
                     "tcp line: %s", line);
    }
    HD_CHECK_MSG(strstr(out, "mpi ") != NULL && strstr(out, "needs-mpi") != NULL,
                 "mpi declared:\n%s", out);
}
