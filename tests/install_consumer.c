/* install_consumer.c - a program that knows libkosmosg only through its installed pkg-config
 * file and header (tests/install-test.sh builds it with `pkg-config --cflags --libs kosmosg`):
 * opens the model given as argv[1] on the CPU, generates one 64x64 image in 2 steps and checks
 * what comes back. */
#include <kosmosg.h>
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv)
{
    kg_model_options o;
    kg_model *m = NULL;
    kg_session *s = NULL;
    kg_params p;
    kg_output out;
    kg_error err;
    kg_status st;
    long sum = 0;

    if (argc != 2) {
        fprintf(stderr, "usage: %s MODEL\n", argv[0]);
        return 2;
    }
    memset(&out, 0, sizeof out);
    memset(&err, 0, sizeof err);
    kg_model_options_init(&o);
    o.backend = KG_BACKEND_CPU;
    st = kg_model_open(&m, argv[1], &o, &err);
    if (st == KG_OK)
        st = kg_session_new(&s, m, &err);
    if (st == KG_OK) {
        kg_params_init(&p);
        p.prompt = "a lighthouse at dusk";
        p.steps = 2;
        p.seed = 42;
        p.width = p.height = 64;
        st = kg_generate(s, &p, NULL, NULL, NULL, &out, &err);
    }
    if (st != KG_OK) {
        fprintf(stderr, "consumer: %s: %s\n", kg_status_name(st), err.msg);
        kg_session_free(s);
        kg_model_close(m);
        return 1;
    }
    for (long i = 0; i < (long)out.n * out.width * out.height * 3; i++)
        sum += out.rgb[i];
    printf("consumer: %d image %dx%d on %s, seed %lld, pixel sum %ld, size step %d\n", out.n,
           out.width, out.height, kg_backend_kind_name(kg_model_backend(m)), (long long)out.seed,
           sum, kg_model_size_multiple(m));
    st = out.n == 1 && out.width == 64 && out.height == 64 && sum > 0 ? KG_OK : KG_ERR_INVALID_ARG;
    kg_output_free(&out);
    kg_session_free(s);
    kg_model_close(m);
    return st == KG_OK ? 0 : 1;
}
