/*
 * multiproc_mpi.c - `mpirun -np 5 hadal ... --mpi`: rank 0 is the coordinator, ranks 1..4 the
 * workers of a 2x2 grid, bootstrapped through MPI (the coordinator's address is broadcast).
 * With the tcp data plane and with --transport mpi, `hadal run --mpi` and `hadal serve --mpi
 * --stdin` (several concurrent requests of different lengths) give the single engine's
 * tokens. SKIPPED when mpirun or the build's MPI support is missing.
 */
#include "cluster_testutil.h"

#include <sys/stat.h>
#include <unistd.h>

#define NREQ 5

static ct_req_t reqs[NREQ];
static char model_dir[1200];

static bool have_mpirun(void)
{
    return system("command -v mpirun > /dev/null 2>&1") == 0;
}

/* Run @cmd under the shell, capturing stdout into @out. */
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

static const char *mpi_prefix(void)
{
    static char buf[256];
    snprintf(buf, sizeof(buf), "HD_LOG_LEVEL=error timeout 120 mpirun -np 5 --oversubscribe %s",
             geteuid() == 0 ? "--allow-run-as-root" : "");
    return buf;
}

static void prepare(void)
{
    HD_CHECK_INT_EQ(tu_checkpoint("tiny-a", 7, model_dir, sizeof(model_dir)), 0);
    hd_engine_h full = ct_open_full(model_dir);
    if (full == NULL) {
        return;
    }
    const hd_model_config_t *cfg = hd_engine_config(full);
    ct_setup(full, reqs, NREQ, false);
    for (int i = 0; i < NREQ; i++) { /* the CLI stops at EOS; serve --stdin gives 8 tokens */
        reqs[i].stop = cfg->eos_id;
        reqs[i].max_tokens = 8;
        ct_reference(full, &reqs[i]);
    }
    hd_engine_destroy(full);
}

static void expect_tokens(const char *line, const ct_req_t *r, const char *what)
{
    int32_t got[CT_MAXTOK];
    int n = 0;
    const char *p = line;
    while (*p && *p != '\n' && n < CT_MAXTOK) {
        char *end;
        while (*p == ' ') {
            p++;
        }
        long v = strtol(p, &end, 10);
        if (end == p) {
            break;
        }
        got[n++] = (int32_t)v;
        p = end;
    }
    HD_CHECK_MSG(n == r->n_ref && memcmp(got, r->ref, sizeof(int32_t) * (size_t)n) == 0,
                 "%s: got %d tokens (%s) vs %d", what, n, line, r->n_ref);
}

static void run_once(const char *transport)
{
    char cmd[4096], out[8192], ids[1024];
    for (int i = 0; i < 2; i++) {
        ct_req_t *r = &reqs[i];
        int o = 0;
        for (int j = 0; j < r->n_prompt; j++) {
            o += snprintf(ids + o, sizeof(ids) - (size_t)o, j ? ",%d" : "%d", r->prompt[j]);
        }
        snprintf(cmd, sizeof(cmd),
                 "%s %s run --mpi --pp 2 --ep 2 --transport %s --threads 1 --model %s "
                 "--prompt-ids %s --max-tokens %d 2>/dev/null",
                 mpi_prefix(), ct_hadal(), transport, model_dir, ids, r->max_tokens);
        int rc = run_capture(cmd, out, sizeof(out));
        HD_CHECK_MSG(rc == 0, "%s: exit %d", cmd, rc);
        char what[64];
        snprintf(what, sizeof(what), "run --mpi %s request %d", transport, i);
        expect_tokens(out, r, what);
    }
}

static void serve_stdin(const char *transport)
{
    char cmd[4096], out[16384], path[1300];
    const char *bd = getenv("HD_BUILD_DIR");
    snprintf(path, sizeof(path), "%s/testdata/mpi_requests_%d.txt", bd ? bd : ".", (int)getpid());
    FILE *f = fopen(path, "w");
    HD_CHECK_TRUE(f != NULL);
    if (f == NULL) {
        return;
    }
    for (int i = 0; i < NREQ; i++) {
        for (int j = 0; j < reqs[i].n_prompt; j++) {
            fprintf(f, j ? ",%d" : "%d", reqs[i].prompt[j]);
        }
        fprintf(f, "\n");
    }
    fclose(f);
    /* every request asks for the largest budget; the reference is cut to it per request */
    snprintf(cmd, sizeof(cmd),
             "%s %s serve --mpi --pp 2 --ep 2 --transport %s --threads 1 --model %s --stdin "
             "--max-tokens %d < %s 2>/dev/null",
             mpi_prefix(), ct_hadal(), transport, model_dir, 8, path);
    int rc = run_capture(cmd, out, sizeof(out));
    HD_CHECK_MSG(rc == 0, "%s: exit %d", cmd, rc);
    for (int i = 0; i < NREQ; i++) {
        char key[16], what[64];
        snprintf(key, sizeof(key), "%d:", i + 1);
        char *line = strstr(out, key);
        HD_CHECK_MSG(line != NULL, "serve --mpi %s: no output for request %d in:\n%s",
                     transport, i + 1, out);
        if (line == NULL) {
            continue;
        }
        ct_req_t r = reqs[i];
        snprintf(what, sizeof(what), "serve --mpi %s request %d", transport, i + 1);
        expect_tokens(line + strlen(key), &r, what);
    }
    unlink(path);
}

HD_TEST(mpirun_2x2_grid_equals_single_engine)
{
    char out[4096];
    if (!have_mpirun()) {
        HD_SKIP("mpirun not found");
    }
    snprintf(out, sizeof(out), "%s %s run --mpi --model /nonexistent --prompt-ids 1 2>&1",
             mpi_prefix(), ct_hadal());
    char probe[4096];
    run_capture(out, probe, sizeof(probe));
    if (strstr(probe, "no MPI") != NULL) {
        HD_SKIP("this build has no MPI support");
    }
    prepare();
    run_once("tcp");
    run_once("mpi");
    serve_stdin("tcp");
    serve_stdin("mpi");
}
