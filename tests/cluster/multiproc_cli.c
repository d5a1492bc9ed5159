/*
 * multiproc_cli.c - the command line over real processes: `hadal run --pp P --ep E` prints
 * exactly what the single-process `hadal run` prints, and `hadal serve --stdin` with no
 * model argument generates the built-in tiny-a model (seed 1) into its cache directory, starts
 * a 1x2 grid and answers each request line with the single engine's tokens.
 */
#include "cluster_testutil.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <fcntl.h>
#include <sys/stat.h>

static int run_capture(const char *cmd, char *out, size_t cap)
{
    FILE *f = popen(cmd, "r");
    size_t n = 0;
    if (f == NULL) {
        return -1;
    }
    while (n + 1 < cap) {
        size_t got = fread(out + n, 1, cap - 1 - n, f);
        if (got == 0) {
            break;
        }
        n += got;
    }
    out[n] = '\0';
    int st = pclose(f);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

HD_TEST(run_on_process_grid_prints_single_engine_tokens)
{
    char dir[1200], cmd[4096], single[4096], grid[4096];
    static const char *prompts[] = {"5,6,7,8,9", "1", "3,1,4,1,5,9,2,6,5,3,5,8,9,7,9,3,2,3,8,4"};
    static const int grids[][2] = {{2, 2}, {1, 4}, {3, 1}};
    HD_CHECK_INT_EQ(tu_checkpoint("tiny-b", 7, dir, sizeof(dir)), 0);
    for (int p = 0; p < 4; p++) { /* the last: plain numerics, sampled */
        const char *extra = p == 3 ? "--numerics plain --temperature 0.8 --seed 5" : "";
        const char *ids = prompts[p % 3];
        snprintf(cmd, sizeof(cmd),
                 "timeout 60 %s run --model %s --prompt-ids %s --max-tokens 12 --threads 1 "
                 "--chunk 7 %s 2>/dev/null", ct_hadal(), dir, ids, extra);
        HD_CHECK_INT_EQ(run_capture(cmd, single, sizeof(single)), 0);
        for (int g = 0; g < 3; g++) {
            snprintf(cmd, sizeof(cmd),
                     "timeout 60 %s run --model %s --prompt-ids %s --max-tokens 12 --threads 1 "
                     "--chunk 7 %s --pp %d --ep %d 2>/dev/null", ct_hadal(), dir, ids, extra,
                     grids[g][0], grids[g][1]);
            HD_CHECK_INT_EQ(run_capture(cmd, grid, sizeof(grid)), 0);
            HD_CHECK_MSG(strcmp(single, grid) == 0, "grid %dx%d prompt %d: '%s' vs '%s'",
                         grids[g][0], grids[g][1], p, grid, single);
        }
    }
}

HD_TEST(serve_without_arguments_serves_the_builtin_model)
{
    char cache[1200], cmd[4096], out[8192], path[1300], one[1024];
    const char *bd = getenv("HD_BUILD_DIR");
    static const char *prompts[] = {"5,6,7,8,9", "1,2,3", "42"};
    snprintf(cache, sizeof(cache), "%s/testdata/serve-cache", bd ? bd : ".");
    snprintf(path, sizeof(path), "%s/testdata/serve_requests_%d.txt", bd ? bd : ".",
             (int)getpid());
    FILE *f = fopen(path, "w");
    HD_CHECK_TRUE(f != NULL);
    if (f == NULL) {
        return;
    }
    for (int i = 0; i < 3; i++) {
        fprintf(f, "%s\n", prompts[i]);
    }
    fclose(f);
    snprintf(cmd, sizeof(cmd),
             "XDG_CACHE_HOME=%s timeout 120 %s serve --stdin --max-tokens 6 --threads 1 < %s "
             "2>/dev/null", cache, ct_hadal(), path);
    HD_CHECK_INT_EQ(run_capture(cmd, out, sizeof(out)), 0);
    unlink(path);
    for (int i = 0; i < 3; i++) {
        char key[16], ref[1024];
        snprintf(cmd, sizeof(cmd),
                 "timeout 60 %s run --model %s/hadal/tiny-a-s1 --prompt-ids %s --max-tokens 6 "
                 "--threads 1 2>/dev/null", ct_hadal(), cache, prompts[i]);
        HD_CHECK_INT_EQ(run_capture(cmd, ref, sizeof(ref)), 0);
        ref[strcspn(ref, "\n")] = '\0';
        snprintf(key, sizeof(key), "%d: ", i + 1);
        char *line = strstr(out, key);
        HD_CHECK_MSG(line != NULL, "no answer to request %d in:\n%s", i + 1, out);
        if (line == NULL) {
            continue;
        }
        snprintf(one, sizeof(one), "%s", line + strlen(key));
        one[strcspn(one, "\n")] = '\0';
        char *bracket = strstr(one, " [");
        if (bracket != NULL) {
            *bracket = '\0';
        }
        HD_CHECK_MSG(strcmp(one, ref) == 0, "request %d: '%s' vs single engine '%s'", i + 1,
                     one, ref);
    }
}

static int free_port(void)
{
    struct sockaddr_in sin = {.sin_family = AF_INET};
    socklen_t sl = sizeof(sin);
    inet_pton(AF_INET, "127.0.0.1", &sin.sin_addr);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sin, sizeof(sin)) != 0) {
        return -1;
    }
    getsockname(fd, (struct sockaddr *)&sin, &sl);
    close(fd);
    return ntohs(sin.sin_port);
}

/* hadal-coordinator and two hadal-worker processes started by hand (the installed names). */
HD_TEST(coordinator_and_workers_by_hand)
{
    char dir[1200], cmd[4096], out[4096], ref[1024];
    const char *bd = getenv("HD_BUILD_DIR");
    int port = free_port();
    HD_CHECK_TRUE(port > 0);
    HD_CHECK_INT_EQ(tu_checkpoint("tiny-a", 7, dir, sizeof(dir)), 0);
    snprintf(cmd, sizeof(cmd),
             "timeout 60 %s run --model %s --prompt-ids 9,8,7 --max-tokens 7 --threads 1 "
             "2>/dev/null", ct_hadal(), dir);
    HD_CHECK_INT_EQ(run_capture(cmd, ref, sizeof(ref)), 0);
    ref[strcspn(ref, "\n")] = '\0';
    /* the workers start first and wait for the coordinator; it serves one request, leaves */
    snprintf(cmd, sizeof(cmd),
             "B=%s/tools; (timeout 60 $B/hadal-worker --coordinator 127.0.0.1:%d --threads 1 "
             "--exit-on-disconnect 2>/dev/null &); (timeout 60 $B/hadal-worker --coordinator "
             "127.0.0.1:%d --threads 1 --exit-on-disconnect 2>/dev/null &); echo 9,8,7 | "
             "timeout 60 $B/hadal-coordinator --pp 1 --ep 2 --model %s --listen 127.0.0.1:%d "
             "--stdin --max-tokens 7 2>/dev/null", bd ? bd : "..", port, port, dir, port);
    HD_CHECK_INT_EQ(run_capture(cmd, out, sizeof(out)), 0);
    char *bracket = strstr(out, " [");
    if (bracket != NULL) {
        *bracket = '\0';
    }
    HD_CHECK_MSG(strncmp(out, "1: ", 3) == 0 && strcmp(out + 3, ref) == 0, "'%s' vs '%s'", out,
                 ref);
}

static pid_t spawn(char *const argv[])
{
    pid_t pid = fork();
    if (pid == 0) {
        int null = open("/dev/null", O_WRONLY);
        dup2(null, 2);
        execv(argv[0], argv);
        _exit(127);
    }
    return pid;
}

/* The coordinator dies (kill -9) under workers that were started to rejoin: a new
 * coordinator on the same port gets them back and serves. */
HD_TEST(workers_rejoin_a_restarted_coordinator)
{
    char dir[1200], cmd[4096], out[4096], ref[1024], coord[64], exe[1200];
    int port = free_port(), st;
    HD_CHECK_TRUE(port > 0);
    HD_CHECK_INT_EQ(tu_checkpoint("tiny-a", 7, dir, sizeof(dir)), 0);
    snprintf(cmd, sizeof(cmd),
             "timeout 60 %s run --model %s --prompt-ids 4,5,6 --max-tokens 6 --threads 1 "
             "2>/dev/null", ct_hadal(), dir);
    HD_CHECK_INT_EQ(run_capture(cmd, ref, sizeof(ref)), 0);
    ref[strcspn(ref, "\n")] = '\0';
    snprintf(coord, sizeof(coord), "127.0.0.1:%d", port);
    snprintf(exe, sizeof(exe), "%s", ct_hadal());
    char *wargv[] = {exe, "worker", "--coordinator", coord, "--threads", "1", NULL};
    pid_t w0 = spawn(wargv), w1 = spawn(wargv);
    char *cargv[] = {exe, "coordinator", "--pp", "1", "--ep", "2", "--model", dir, "--listen",
                     coord, NULL};
    pid_t c1 = spawn(cargv);
    usleep(1500 * 1000); /* placed and serving (nothing to serve) */
    kill(c1, SIGKILL);
    waitpid(c1, &st, 0);
    snprintf(cmd, sizeof(cmd),
             "echo 4,5,6 | timeout 60 %s coordinator --pp 1 --ep 2 --model %s --listen %s "
             "--stdin --max-tokens 6 2>/dev/null", exe, dir, coord);
    HD_CHECK_INT_EQ(run_capture(cmd, out, sizeof(out)), 0);
    char *bracket = strstr(out, " [");
    if (bracket != NULL) {
        *bracket = '\0';
    }
    HD_CHECK_MSG(strncmp(out, "1: ", 3) == 0 && strcmp(out + 3, ref) == 0, "'%s' vs '%s'", out,
                 ref);
    /* the second coordinator told them to exit */
    for (int i = 0; i < 2; i++) {
        pid_t w = i ? w1 : w0;
        double t0 = ct_now();
        int rc = -1;
        while (ct_now() - t0 < 10) {
            if (waitpid(w, &st, WNOHANG) == w) {
                rc = WIFEXITED(st) ? WEXITSTATUS(st) : -2;
                break;
            }
            usleep(10000);
        }
        HD_CHECK_MSG(rc == 0, "worker %d: exit %d", i, rc);
        if (rc == -1) {
            kill(w, SIGKILL);
            waitpid(w, &st, 0);
        }
    }
}
