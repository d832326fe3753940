/* test_cli_args.c - kosmosg-generate's option parser (tools/cli_args.c), value by value:
 * strict integers and floats (no truncation, no saturation, no blanks), ranges, the -o
 * pattern (one %d and %% only, never handed to printf), and long messages. */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli_args.h"
#include "testutil.h"

/* Parses "-m M -p P -o OUT" plus the given extra arguments. */
static kg_cli_result parse(kg_cli_args *a, char *msg, size_t size, int n, ...)
{
    char *argv[64] = {"kosmosg-generate", "-m", "m.safetensors", "-p", "a cat", "-o", "out-%d.png"};
    int argc = 7;
    va_list ap;
    va_start(ap, n);
    for (int i = 0; i < n; i++)
        argv[argc++] = va_arg(ap, char *);
    va_end(ap);
    kg_cli_args_init(a);
    return kg_cli_parse(a, argc, argv, msg, size);
}

static void refused(const char *opt, const char *value, const char *expect_in_msg)
{
    kg_cli_args a;
    char msg[1024];
    kg_cli_result r = parse(&a, msg, sizeof msg, 2, opt, value);
    kgt_check(r == KG_CLI_ERROR && strstr(msg, expect_in_msg) != NULL, "%s \"%s\" refused: %s", opt,
              value, msg);
}

static void test_integers(void)
{
    kg_cli_args a;
    char msg[1024];
    kg_cli_result r;
    refused("--steps", "4294967297", "1..1000");
    refused("--steps", "0", "1..1000");
    refused("--steps", "1001", "1..1000");
    refused("--steps", " 5", "1..1000");
    refused("--steps", "+5", "1..1000");
    refused("--steps", "5x", "1..1000");
    refused("--steps", "0x10", "1..1000");
    refused("-s", "", "empty value");
    refused("--seed", "", "empty value");
    refused("--seed", "-2", "-1 (random)");
    refused("--seed", "99999999999999999999", "-1 (random)");
    refused("--seed", "1.5", "-1 (random)");
    refused("-n", "65", "1..64");
    refused("--num-images", "-1", "1..64");
    refused("--threads", "100000", "1..1024");
    refused("--threads", "50000", "1..1024");
    refused("--threads", "-1", "1..1024");
    refused("--threads", "0", "1..1024");
    refused("--threads", "many", "1..1024");
    refused("--threads", "2147483648", "1..1024");
    refused("--size", "64x64junk", "WxH");
    refused("--size", "64x", "WxH");
    refused("--size", "x64", "WxH");
    refused("--size", "63x64", "WxH");
    refused("--size", "4104x64", "WxH");
    refused("--size", "4294967360x64", "WxH");
    refused("--size", "64x64x64", "WxH");
    refused("--size", "-64x64", "WxH");

    r = parse(&a, msg, sizeof msg, 10, "--steps", "1000", "--seed", "9223372036854775807", "-n",
              "64", "--threads", "1024", "--size", "4096x8");
    kgt_check(r == KG_CLI_RUN && a.params.steps == 1000 && a.params.seed == INT64_MAX &&
                  a.params.num_images == 64 && a.mopt.n_threads == 1024 && a.params.width == 4096 &&
                  a.params.height == 8,
              "upper bounds accepted: steps %d seed %lld n %d threads %d size %dx%d (%s)",
              a.params.steps, (long long)a.params.seed, a.params.num_images, a.mopt.n_threads,
              a.params.width, a.params.height, msg);
    r = parse(&a, msg, sizeof msg, 4, "--seed", "-1", "-s1", "--threads=3");
    kgt_check(r == KG_CLI_RUN && a.params.seed == -1 && a.params.steps == 1 &&
                  a.mopt.n_threads == 3,
              "-1 seed, attached -s1 and --threads=3: seed %lld steps %d threads %d (%s)",
              (long long)a.params.seed, a.params.steps, a.mopt.n_threads, msg);
    r = parse(&a, msg, sizeof msg, 0);
    kgt_check(r == KG_CLI_RUN && a.mopt.n_threads == 0 && a.params.steps == 50 &&
                  a.params.seed == -1,
              "defaults: threads %d (all cores), steps %d, seed %lld", a.mopt.n_threads,
              a.params.steps, (long long)a.params.seed);
}

static void test_floats(void)
{
    kg_cli_args a;
    char msg[1024];
    kg_cli_result r;
    refused("-g", "nan", "0..100");
    refused("-g", "inf", "0..100");
    refused("-g", "-1", "0..100");
    refused("-g", "1e30", "0..100");
    refused("-g", "100.5", "0..100");
    refused("-g", "6x", "0..100");
    refused("-g", " 6", "0..100");
    refused("-g", "1e-400", "0..100");
    r = parse(&a, msg, sizeof msg, 2, "-g", "7.5");
    kgt_check(r == KG_CLI_RUN && a.params.guidance_scale == 7.5f, "-g 7.5 -> %g",
              (double)a.params.guidance_scale);
    r = parse(&a, msg, sizeof msg, 2, "-g", ".5");
    kgt_check(r == KG_CLI_RUN && a.params.guidance_scale == 0.5f, "-g .5 -> %g",
              (double)a.params.guidance_scale);
}

static void pattern(const char *pat, int n, int ok, const char *expect)
{
    char msg[1024];
    int r = kg_cli_check_pattern(pat, n, msg, sizeof msg);
    kgt_check(ok ? r == 0 : (r == -1 && strstr(msg, expect) != NULL),
              "-o \"%.40s\" (%zu bytes) for %d: %s%s", pat, strlen(pat), n,
              r == 0 ? "accepted" : "refused: ", r == 0 ? "" : msg);
}

static void test_pattern(void)
{
    char buf[KG_CLI_PATH_MAX], *longp;
    int rc;
    kg_cli_args a;
    char msg[1024];
    pattern("out-%d.png", 2, 1, NULL);
    pattern("out.png", 1, 1, NULL);
    pattern("100%%-%d.png", 3, 1, NULL);
    pattern("out.png", 2, 0, "has no %d but 2 images");
    pattern("%n.png", 1, 0, "\"%n\" is not understood");
    pattern("%s.png", 1, 0, "\"%s\" is not understood");
    pattern("%p-%x.png", 1, 0, "\"%p\" is not understood");
    pattern("%5d.png", 1, 0, "\"%5\" is not understood");
    pattern("%ld.png", 1, 0, "\"%l\" is not understood");
    pattern("out%", 1, 0, "\"%\" is not understood");
    pattern("%d-%d.png", 2, 0, "at most one");
    pattern("", 1, 0, "empty");
    longp = malloc(KG_CLI_PATH_MAX + 10);
    memset(longp, 'a', KG_CLI_PATH_MAX + 9);
    longp[KG_CLI_PATH_MAX + 9] = '\0';
    pattern(longp, 1, 0, "longer than");
    memcpy(longp + KG_CLI_PATH_MAX - 3, "%d", 3);
    pattern(longp, 1, 1, NULL);  /* 4093 + "0" = 4094 bytes */
    pattern(longp, 11, 1, NULL); /* "10": 4095 bytes + NUL fits */
    rc = kg_cli_output_path(longp, 10, buf, sizeof buf);
    kgt_check(rc == 0 && strlen(buf) == 4095, "longest path expands: %zu bytes", strlen(buf));
    pattern(longp, 101, 0, "longer than"); /* "100" would need 4096 + NUL */
    free(longp);

    rc = kg_cli_output_path("a%%b-%d.png", 12, buf, sizeof buf);
    kgt_check(rc == 0 && !strcmp(buf, "a%b-12.png"), "%%%% and %%d expanded: %s", buf);
    kgt_check(kg_cli_output_path("x-%d", 123, buf, 5) == -1, "an expansion that does not fit "
                                                             "is refused, not truncated");
    kgt_check(kg_cli_output_path("%n", 0, buf, sizeof buf) == -1, "%%n is never expanded");

    kg_cli_args_init(&a);
    {
        char *argv[] = {"g", "-m", "m", "-p", "", "-n", "2", "-o", "same.png"};
        kgt_check(kg_cli_parse(&a, 9, argv, msg, sizeof msg) == KG_CLI_ERROR &&
                      strstr(msg, "has no %d"),
                  "-n 2 -o same.png refused at parse time: %s", msg);
    }
}

static void test_structure(void)
{
    kg_cli_args a;
    char msg[1024], small[64];
    kg_cli_result r;
    char *longv = malloc(5000);
    {
        char *argv[] = {"g", "-p", "x", "-o", "o.png"};
        kg_cli_args_init(&a);
        kgt_check(kg_cli_parse(&a, 5, argv, msg, sizeof msg) == KG_CLI_ERROR &&
                      strstr(msg, "-m FILE"),
                  "no model: %s", msg);
    }
    {
        char *argv[] = {"g", "-m", "m", "-o", "o.png"};
        kg_cli_args_init(&a);
        kgt_check(kg_cli_parse(&a, 5, argv, msg, sizeof msg) == KG_CLI_ERROR &&
                      strstr(msg, "-p TEXT"),
                  "no prompt: %s", msg);
    }
    {
        char *argv[] = {"g", "-m", "m", "-p", "x", "-o"};
        kg_cli_args_init(&a);
        kgt_check(kg_cli_parse(&a, 6, argv, msg, sizeof msg) == KG_CLI_ERROR &&
                      strstr(msg, "-o needs a value"),
                  "-o without value: %s", msg);
    }
    kgt_check(parse(&a, msg, sizeof msg, 1, "--bogus") == KG_CLI_ERROR &&
                  strstr(msg, "unknown option \"--bogus\""),
              "unknown long option: %s", msg);
    kgt_check(parse(&a, msg, sizeof msg, 1, "-Z") == KG_CLI_ERROR &&
                  strstr(msg, "unknown option \"-Z\""),
              "unknown short option: %s", msg);
    kgt_check(parse(&a, msg, sizeof msg, 1, "stray") == KG_CLI_ERROR &&
                  strstr(msg, "unexpected argument \"stray\""),
              "stray argument: %s", msg);
    kgt_check(parse(&a, msg, sizeof msg, 1, "--help=1") == KG_CLI_ERROR, "--help=1: %s", msg);
    kgt_check(parse(&a, msg, sizeof msg, 1, "-h") == KG_CLI_HELP, "-h asks for help");
    kgt_check(parse(&a, msg, sizeof msg, 2, "--scheduler", "ddpm") == KG_CLI_ERROR &&
                  strstr(msg, "dpm++2m, ddim"),
              "bad scheduler: %s", msg);
    kgt_check(parse(&a, msg, sizeof msg, 2, "--backend", "gpu") == KG_CLI_ERROR, "bad backend: %s",
              msg);
    kgt_check(parse(&a, msg, sizeof msg, 0) == KG_CLI_RUN && a.mopt.precision == KG_PRECISION_AUTO,
              "default precision auto");
    {
        static const char *const names[] = {"fp32", "bf16", "fp16", "auto"};
        static const kg_precision want[] = {KG_PRECISION_FP32, KG_PRECISION_BF16, KG_PRECISION_FP16,
                                            KG_PRECISION_AUTO};
        for (int i = 0; i < 4; i++)
            kgt_check(parse(&a, msg, sizeof msg, 2, "--precision", names[i]) == KG_CLI_RUN &&
                          a.mopt.precision == want[i],
                      "--precision %s parsed", names[i]);
    }
    kgt_check(parse(&a, msg, sizeof msg, 1, "--precision=bf16") == KG_CLI_RUN &&
                  a.mopt.precision == KG_PRECISION_BF16,
              "--precision=bf16 parsed");
    refused("--precision", "bfloat16", "auto, fp32, bf16 or fp16");
    refused("--precision", "BF16", "auto, fp32, bf16 or fp16");
    refused("--precision", "", "empty value");
    kgt_check(parse(&a, msg, sizeof msg, 2, "-N", "-blurry") == KG_CLI_RUN &&
                  !strcmp(a.negative, "-blurry"),
              "a value may start with a dash: -N -blurry");
    {
        char *argv[48] = {"g", "-m", "m", "-p", "x", "-o", "o.png"};
        int argc = 7;
        for (int i = 0; i < 17; i++) {
            argv[argc++] = "-i";
            argv[argc++] = "ref.png";
        }
        kg_cli_args_init(&a);
        kgt_check(kg_cli_parse(&a, argc, argv, msg, sizeof msg) == KG_CLI_ERROR &&
                      strstr(msg, "at most 16"),
                  "17 images: %s", msg);
    }
    /* a long value keeps the end of the message (what is expected) */
    memset(longv, '9', 4999);
    longv[4999] = '\0';
    r = parse(&a, small, sizeof small, 2, "--steps", longv);
    kgt_check(r == KG_CLI_ERROR && strlen(small) == sizeof small - 1 && strstr(small, "...") &&
                  strstr(small, "1..1000"),
              "long value, 64-byte message keeps its cause: %s", small);
    free(longv);
}

/* --lora FILE[:SCALE], repeatable; the scale after the last ':' when it is a number */
static void test_lora(void)
{
    kg_cli_args a;
    char msg[1024];
    kg_cli_result r = parse(&a, msg, sizeof msg, 6, "--lora", "a.safetensors:0.8", "--lora",
                            "/d:x/b.safetensors", "--lora", "c.safetensors:-0.5");
    kgt_check(r == KG_CLI_RUN && a.n_loras == 3 && !strcmp(a.lora_paths[0], "a.safetensors") &&
                  a.lora_scales[0] == 0.8f && !strcmp(a.lora_paths[1], "/d:x/b.safetensors") &&
                  a.lora_scales[1] == 1.0f && !strcmp(a.lora_paths[2], "c.safetensors") &&
                  a.lora_scales[2] == -0.5f,
              "--lora x3: scales 0.8, 1 (omitted), -0.5; ':' inside a path kept (%s)", msg);
    refused("--lora", ":0.5", "expected FILE or FILE:SCALE");
    r = parse(&a, msg, sizeof msg, 18, "--lora", "1", "--lora", "2", "--lora", "3", "--lora", "4",
              "--lora", "5", "--lora", "6", "--lora", "7", "--lora", "8", "--lora", "9");
    kgt_check(r == KG_CLI_ERROR && strstr(msg, "at most 8 LoRAs"), "9 LoRAs refused: %s", msg);
}

int main(void)
{
    test_lora();
    test_integers();
    test_floats();
    test_pattern();
    test_structure();
    return kgt_finish();
}
