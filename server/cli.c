#include "server/cli.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "models/model.h"
#include "server/classify.h"
#include "server/log.h"
#include "server/tokenize.h"

static const char predict_usage[] =
    "usage: predictd predict --model DIR (--text TEXT | --json BODY) [--dtype f32|f16|bf16|int8]\n"
    "Prints what POST /predict answers: --text as ?text=TEXT, --json as a JSON body.\n";

static const char tokenize_usage[] = "usage: predictd tokenize --model DIR TEXT\n"
                                     "Prints the token ids of TEXT, special tokens included.\n";

static int load(const char *dir, const char *dtype_name, model **m)
{
    model_load_opts opts = {.dtype = ENG_F32};
    if (dtype_name) {
        int dt = eng_dtype_from_name(dtype_name);
        if (dt != ENG_F32 && dt != ENG_F16 && dt != ENG_BF16 && dt != ENG_I8) {
            fprintf(stderr, "predictd: --dtype %s: use f32, f16, bf16 or int8\n", dtype_name);
            return 2;
        }
        opts.dtype = (eng_dtype)dt;
    }
    eng_err err = {0};
    if (model_load(dir, &opts, m, &err)) {
        fprintf(stderr, "predictd: %s\n", err.msg);
        return 2;
    }
    return 0;
}

static int answer(const srv_reply *r)
{
    fwrite(r->body.data ? r->body.data : "", 1, r->body.len, stdout);
    fputc('\n', stdout);
    return r->status >= 200 && r->status < 300 ? 0 : 1;
}

static int run_predict(const model *m, const srv_request *in, srv_reply *out)
{
    srv_classify_req req;
    if (m->task != MODEL_TASK_CLASSIFY) {
        srv_reply_detail(out, 422, "the one-shot CLI answers text-classification models only");
        return 0;
    }
    if (srv_classify_parse(m, in, &req, out))
        return 0;
    eng_arena arena;
    eng_arena_init(&arena);
    eng_err err = {0};
    if (srv_classify_run(m, &req, &arena, &err))
        srv_reply_eng_error(out, &err);
    else
        srv_classify_format(m, &req, out);
    eng_arena_free(&arena);
    srv_classify_req_free(&req);
    return 0;
}

int srv_cli_predict(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"model", required_argument, 0, 'm'}, {"text", required_argument, 0, 't'},
        {"json", required_argument, 0, 'j'},  {"dtype", required_argument, 0, 'd'},
        {"help", no_argument, 0, 'h'},        {0, 0, 0, 0},
    };
    const char *dir = NULL, *text = NULL, *json = NULL, *dtype = NULL;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (c) {
        case 'm': dir = optarg; break;
        case 't': text = optarg; break;
        case 'j': json = optarg; break;
        case 'd': dtype = optarg; break;
        case 'h': fputs(predict_usage, stdout); return 0;
        default: fputs(predict_usage, stderr); return 2;
        }
    }
    if (!dir || (!text == !json) || optind != argc) {
        fputs(predict_usage, stderr);
        return 2;
    }
    model *m;
    int rc = load(dir, dtype, &m);
    if (rc)
        return rc;
    srv_limits limits = {.max_client_batch = 32};
    srv_request in = {.query_text = text, .query_text_len = text ? strlen(text) : 0,
                      .body = json, .body_len = json ? strlen(json) : 0, .limits = &limits};
    srv_reply out;
    srv_reply_init(&out);
    run_predict(m, &in, &out);
    rc = answer(&out);
    srv_reply_free(&out);
    model_free(m);
    return rc;
}

int srv_cli_tokenize(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"model", required_argument, 0, 'm'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0},
    };
    const char *dir = NULL;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        if (c == 'm') {
            dir = optarg;
        } else {
            fputs(tokenize_usage, c == 'h' ? stdout : stderr);
            return c == 'h' ? 0 : 2;
        }
    }
    if (!dir || optind != argc - 1) {
        fputs(tokenize_usage, stderr);
        return 2;
    }
    model *m;
    int rc = load(dir, NULL, &m);
    if (rc)
        return rc;
    srv_reply out;
    srv_reply_init(&out);
    srv_tokenize_ids(m, argv[optind], strlen(argv[optind]), &out);
    rc = answer(&out);
    srv_reply_free(&out);
    model_free(m);
    return rc;
}
