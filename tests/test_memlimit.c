/* test_memlimit.c - a generation under an address-space limit (ulimit -v) ends, and ends
 * either with its image or with KG_ERR_NOMEM: never a hang, a crash or another status.
 *
 * The first CPU backend used OpenBLAS, which under `ulimit -v` of 0.7-1.4 GB looped forever in
 * its buffer allocation (and again at exit); oneDNN generates its JIT kernels on first use and
 * crashed when that allocation failed. Each case here runs in a child process with
 * RLIMIT_AS set: open the tiny model, a session, a guided 64x64 generation of 2 steps on
 * 2 threads, with one reference image. The limits sweep from just above the child's
 * starting address space up, in 8 MiB steps, until three in a row succeed, so every
 * allocation of the path (model, scratch, worker threads, oneDNN's kernels and buffers, the
 * arena) fails in some case. Each child must exit within LIMIT_S seconds; the sweep must see
 * both outcomes. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "kosmosg.h"
#include "testutil.h"

#define LIMIT_S 60
#define STEP_MIB 8
#define CHILD_NOMEM 10
#define CHILD_OTHER 20

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static size_t vm_bytes(void)
{
    unsigned long pages = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f) {
        if (fscanf(f, "%lu", &pages) != 1)
            pages = 0;
        fclose(f);
    }
    return (size_t)pages * (size_t)sysconf(_SC_PAGESIZE);
}

/* In the child: 0, CHILD_NOMEM or CHILD_OTHER, with the status on stdout. */
static int child(const char *path, size_t limit)
{
    struct rlimit rl = {limit, limit};
    static uint8_t pixels[32 * 24 * 3];
    kg_model_options o;
    kg_model *m = NULL;
    kg_session *s = NULL;
    kg_params p;
    kg_output out = {0};
    kg_error err = {0};
    kg_image img = {KG_PIX_RGB, 32, 24, 32 * 3, pixels};
    kg_status st;

    for (size_t i = 0; i < sizeof pixels; i++)
        pixels[i] = (uint8_t)(i * 37 % 251);
    if (setrlimit(RLIMIT_AS, &rl) != 0) {
        printf("setrlimit: %s\n", strerror(errno));
        return CHILD_OTHER;
    }
    kg_model_options_init(&o);
    o.backend = KG_BACKEND_CPU;
    o.n_threads = 2;
    st = kg_model_open(&m, path, &o, &err);
    if (st == KG_OK)
        st = kg_session_new(&s, m, &err);
    if (st == KG_OK) {
        kg_params_init(&p);
        p.prompt = "a <i> in the snow";
        p.images = &img;
        p.n_images = 1;
        p.steps = 2;
        p.seed = 3;
        p.width = p.height = 64;
        st = kg_generate(s, &p, NULL, NULL, NULL, &out, &err);
        kg_output_free(&out);
    }
    printf("  %s%s%s\n", kg_status_name(st), st ? ": " : "", st ? err.msg : "");
    fflush(stdout);
    kg_session_free(s);
    kg_model_close(m);
    return st == KG_OK ? 0 : st == KG_ERR_NOMEM ? CHILD_NOMEM : CHILD_OTHER;
}

int main(void)
{
    const char *path = getenv("KG_TINY_MODEL");
    size_t base = vm_bytes(), step = (size_t)STEP_MIB << 20;
    int n_ok = 0, n_nomem = 0, ok_run = 0, cases = 0;

#if defined(__SANITIZE_ADDRESS__)
    printf(
        "skipped: AddressSanitizer reserves terabytes of address space, RLIMIT_AS cannot apply\n");
    return 77;
#endif
    if (!path) {
        printf("KG_TINY_MODEL is not set\n");
        return 1;
    }
    printf("starting address space %.0f MiB; limits from there in %d MiB steps\n",
           (double)base / (1 << 20), STEP_MIB);
    for (size_t limit = base + step; ok_run < 3 && limit < base + ((size_t)1400 << 20);
         limit += step, cases++) {
        double t0 = now(), dt;
        int wst = 0, done = 0;
        pid_t pid;
        fflush(stdout);
        pid = fork();
        if (pid < 0) {
            kgt_check(0, "fork: %s", strerror(errno));
            break;
        }
        if (pid == 0)
            _exit(child(path, limit));
        while (!done && now() - t0 < LIMIT_S) {
            pid_t r = waitpid(pid, &wst, WNOHANG);
            if (r == pid)
                done = 1;
            else
                usleep(5000);
        }
        dt = now() - t0;
        if (!done) {
            kill(pid, SIGKILL);
            waitpid(pid, &wst, 0);
            kgt_check(0, "limit %.0f MiB: still running after %d s (killed)",
                      (double)limit / (1 << 20), LIMIT_S);
            ok_run = 0;
            continue;
        }
        if (WIFSIGNALED(wst)) {
            kgt_check(0, "limit %.0f MiB: killed by signal %d (%s) after %.2f s",
                      (double)limit / (1 << 20), WTERMSIG(wst), strsignal(WTERMSIG(wst)), dt);
            ok_run = 0;
            continue;
        }
        kgt_check(WEXITSTATUS(wst) == 0 || WEXITSTATUS(wst) == CHILD_NOMEM,
                  "limit %.0f MiB: ended in %.2f s with %s", (double)limit / (1 << 20), dt,
                  WEXITSTATUS(wst) == 0             ? "the image"
                  : WEXITSTATUS(wst) == CHILD_NOMEM ? "KG_ERR_NOMEM"
                                                    : "another status (above)");
        n_ok += WEXITSTATUS(wst) == 0;
        n_nomem += WEXITSTATUS(wst) == CHILD_NOMEM;
        ok_run = WEXITSTATUS(wst) == 0 ? ok_run + 1 : 0;
    }
    kgt_check(n_nomem > 0 && n_ok > 0,
              "%d limits: %d ended with KG_ERR_NOMEM, %d generated (both outcomes seen)", cases,
              n_nomem, n_ok);
    return kgt_finish();
}
