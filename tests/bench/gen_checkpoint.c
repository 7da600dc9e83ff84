/* Writes random-weight Hugging Face checkpoints with the real sizes of
 * distilbert-base-uncased-finetuned-sst-2-english, gpt2 and
 * openai/clip-vit-base-patch32, for speed work (real weights cannot be
 * downloaded here; speed does not depend on the values).
 *
 *   build/gen_checkpoint distilbert|gpt2|clip OUT_DIR
 *
 * Values are reproducible and identical to the peers' generator: LayerNorm
 * weights 1 and biases 0, logit_scale ln(1/0.07), every other element i of a
 * tensor (2u - 1) * 0.02 * sqrt(3) with u from splitmix64 seeded by the FNV-1a
 * hash of the tensor's name. Tokenizer files come from tests/fixtures. */
#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define SEED 20250220ull
#define MAX_TENSORS 512

typedef struct spec {
    char name[128];
    int ndim;
    int64_t shape[4];
} spec;

static spec specs[MAX_TENSORS];
static int n_specs;

static void add(const char *name, int ndim, int64_t a, int64_t b, int64_t c, int64_t d)
{
    spec *s = &specs[n_specs++];
    snprintf(s->name, sizeof s->name, "%s", name);
    s->ndim = ndim;
    s->shape[0] = a, s->shape[1] = b, s->shape[2] = c, s->shape[3] = d;
}

static void add_linear(const char *prefix, int64_t out, int64_t in, int bias)
{
    char n[128];
    snprintf(n, sizeof n, "%s.weight", prefix);
    add(n, 2, out, in, 0, 0);
    if (bias) {
        snprintf(n, sizeof n, "%s.bias", prefix);
        add(n, 1, out, 0, 0, 0);
    }
}

static void add_norm(const char *prefix, int64_t d)
{
    add_linear(prefix, d, 0, 1);
    specs[n_specs - 2].ndim = 1; /* weight (d) */
}

static uint64_t fnv1a64(const char *s)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 0x100000001b3ull;
    return h;
}

static float splitmix_uniform(uint64_t seed, uint64_t i)
{
    uint64_t z = seed + (i + 1) * 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return (float)(z >> 40) * (1.0f / (1 << 24));
}

static int is_norm(const char *n)
{
    return strstr(n, "LayerNorm") || strstr(n, "layer_norm") || strstr(n, ".ln_") ||
           strstr(n, "layrnorm") || strstr(n, "layernorm");
}

static void fill(const spec *s, float *out, uint64_t n)
{
    const char *dot = strrchr(s->name, '.');
    if (strcmp(s->name, "logit_scale") == 0) {
        out[0] = logf(1 / 0.07f);
    } else if (is_norm(s->name)) {
        float v = dot && strcmp(dot, ".weight") == 0 ? 1.0f : 0.0f;
        for (uint64_t i = 0; i < n; i++)
            out[i] = v;
    } else {
        uint64_t seed = fnv1a64(s->name) ^ SEED;
        float amp = 0.02f * sqrtf(3.0f);
        for (uint64_t i = 0; i < n; i++)
            out[i] = (splitmix_uniform(seed, i) * 2 - 1) * amp;
    }
}

static uint64_t numel(const spec *s)
{
    uint64_t n = 1;
    for (int d = 0; d < s->ndim; d++)
        n *= (uint64_t)s->shape[d];
    return n;
}

static int write_safetensors(const char *path)
{
    json_t *h = json_object();
    uint64_t off = 0;
    for (int i = 0; i < n_specs; i++) {
        json_t *shape = json_array();
        for (int d = 0; d < specs[i].ndim; d++)
            json_array_append_new(shape, json_integer(specs[i].shape[d]));
        uint64_t bytes = numel(&specs[i]) * 4;
        json_object_set_new(h, specs[i].name, json_pack("{s:s, s:o, s:[I,I]}", "dtype", "F32",
                            "shape", shape, "data_offsets", (json_int_t)off, (json_int_t)(off + bytes)));
        off += bytes;
    }
    json_object_set_new(h, "__metadata__", json_pack("{s:s}", "format", "pt"));
    char *text = json_dumps(h, JSON_COMPACT | JSON_PRESERVE_ORDER);
    size_t len = strlen(text), padded = len + (8 - (8 + len) % 8) % 8;
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    uint64_t le = padded;
    fwrite(&le, 8, 1, f); /* x86-64 and every platform we build on is little-endian */
    fwrite(text, 1, len, f);
    for (size_t i = len; i < padded; i++)
        fputc(' ', f);
    for (int i = 0; i < n_specs; i++) {
        uint64_t n = numel(&specs[i]);
        float *buf = malloc((n ? n : 1) * sizeof *buf);
        fill(&specs[i], buf, n);
        fwrite(buf, 4, n, f);
        free(buf);
    }
    free(text);
    json_decref(h);
    return fclose(f);
}

static const char *distilbert(void)
{
    const int64_t D = 768, F = 3072;
    add("distilbert.embeddings.word_embeddings.weight", 2, 30522, D, 0, 0);
    add("distilbert.embeddings.position_embeddings.weight", 2, 512, D, 0, 0);
    add_norm("distilbert.embeddings.LayerNorm", D);
    for (int l = 0; l < 6; l++) {
        char p[128];
        const char *lins[] = {"attention.q_lin", "attention.k_lin", "attention.v_lin", "attention.out_lin"};
        for (int k = 0; k < 4; k++) {
            snprintf(p, sizeof p, "distilbert.transformer.layer.%d.%s", l, lins[k]);
            add_linear(p, D, D, 1);
        }
        snprintf(p, sizeof p, "distilbert.transformer.layer.%d.sa_layer_norm", l);
        add_norm(p, D);
        snprintf(p, sizeof p, "distilbert.transformer.layer.%d.ffn.lin1", l);
        add_linear(p, F, D, 1);
        snprintf(p, sizeof p, "distilbert.transformer.layer.%d.ffn.lin2", l);
        add_linear(p, D, F, 1);
        snprintf(p, sizeof p, "distilbert.transformer.layer.%d.output_layer_norm", l);
        add_norm(p, D);
    }
    add_linear("pre_classifier", D, D, 1);
    add_linear("classifier", 2, D, 1);
    return "{\"activation\":\"gelu\",\"architectures\":[\"DistilBertForSequenceClassification\"],"
           "\"dim\":768,\"hidden_dim\":3072,\"id2label\":{\"0\":\"NEGATIVE\",\"1\":\"POSITIVE\"},"
           "\"label2id\":{\"NEGATIVE\":0,\"POSITIVE\":1},\"max_position_embeddings\":512,"
           "\"model_type\":\"distilbert\",\"n_heads\":12,\"n_layers\":6,\"pad_token_id\":0,"
           "\"sinusoidal_pos_embds\":false,\"vocab_size\":30522,\"torch_dtype\":\"float32\","
           "\"_note\":\"RANDOM WEIGHTS for speed work (tests/bench/gen_checkpoint.c)\"}";
}

static const char *gpt2(void)
{
    const int64_t D = 768;
    add("transformer.wte.weight", 2, 50257, D, 0, 0);
    add("transformer.wpe.weight", 2, 1024, D, 0, 0);
    for (int l = 0; l < 12; l++) {
        char p[128];
        snprintf(p, sizeof p, "transformer.h.%d.ln_1", l);
        add_norm(p, D);
        snprintf(p, sizeof p, "transformer.h.%d.attn.c_attn", l);
        add_linear(p, D, 3 * D, 1); /* Conv1D: [in, out] */
        specs[n_specs - 1].shape[0] = 3 * D;
        snprintf(p, sizeof p, "transformer.h.%d.attn.c_proj", l);
        add_linear(p, D, D, 1);
        snprintf(p, sizeof p, "transformer.h.%d.ln_2", l);
        add_norm(p, D);
        snprintf(p, sizeof p, "transformer.h.%d.mlp.c_fc", l);
        add_linear(p, D, 4 * D, 1);
        specs[n_specs - 1].shape[0] = 4 * D;
        snprintf(p, sizeof p, "transformer.h.%d.mlp.c_proj", l);
        add_linear(p, 4 * D, D, 1);
        specs[n_specs - 1].shape[0] = D;
    }
    add_norm("transformer.ln_f", D);
    return "{\"activation_function\":\"gelu_new\",\"architectures\":[\"GPT2LMHeadModel\"],"
           "\"bos_token_id\":50256,\"eos_token_id\":50256,\"layer_norm_epsilon\":1e-05,"
           "\"model_type\":\"gpt2\",\"n_ctx\":1024,\"n_embd\":768,\"n_head\":12,\"n_inner\":null,"
           "\"n_layer\":12,\"n_positions\":1024,\"task_specific_params\":{\"text-generation\":"
           "{\"do_sample\":true,\"max_length\":50}},\"vocab_size\":50257,\"torch_dtype\":\"float32\","
           "\"_note\":\"RANDOM WEIGHTS for speed work (tests/bench/gen_checkpoint.c)\"}";
}

static void clip_encoder(const char *prefix, int64_t D, int64_t F)
{
    for (int l = 0; l < 12; l++) {
        char p[128];
        const char *projs[] = {"k_proj", "v_proj", "q_proj", "out_proj"};
        for (int k = 0; k < 4; k++) {
            snprintf(p, sizeof p, "%s.encoder.layers.%d.self_attn.%s", prefix, l, projs[k]);
            add_linear(p, D, D, 1);
        }
        snprintf(p, sizeof p, "%s.encoder.layers.%d.layer_norm1", prefix, l);
        add_norm(p, D);
        snprintf(p, sizeof p, "%s.encoder.layers.%d.mlp.fc1", prefix, l);
        add_linear(p, F, D, 1);
        snprintf(p, sizeof p, "%s.encoder.layers.%d.mlp.fc2", prefix, l);
        add_linear(p, D, F, 1);
        snprintf(p, sizeof p, "%s.encoder.layers.%d.layer_norm2", prefix, l);
        add_norm(p, D);
    }
}

static const char *clip(void)
{
    add("logit_scale", 0, 0, 0, 0, 0);
    add("text_model.embeddings.token_embedding.weight", 2, 49408, 512, 0, 0);
    add("text_model.embeddings.position_embedding.weight", 2, 77, 512, 0, 0);
    clip_encoder("text_model", 512, 2048);
    add_norm("text_model.final_layer_norm", 512);
    add("vision_model.embeddings.class_embedding", 1, 768, 0, 0, 0);
    add("vision_model.embeddings.patch_embedding.weight", 4, 768, 3, 32, 32);
    add("vision_model.embeddings.position_embedding.weight", 2, 50, 768, 0, 0);
    add_norm("vision_model.pre_layrnorm", 768);
    clip_encoder("vision_model", 768, 3072);
    add_norm("vision_model.post_layernorm", 768);
    add_linear("visual_projection", 512, 768, 0);
    add_linear("text_projection", 512, 512, 0);
    return "{\"architectures\":[\"CLIPModel\"],\"model_type\":\"clip\",\"projection_dim\":512,"
           "\"logit_scale_init_value\":2.6592,\"text_config\":{\"hidden_size\":512,"
           "\"intermediate_size\":2048,\"num_attention_heads\":8,\"num_hidden_layers\":12,"
           "\"max_position_embeddings\":77,\"vocab_size\":49408,\"hidden_act\":\"quick_gelu\","
           "\"layer_norm_eps\":1e-05,\"bos_token_id\":49406,\"eos_token_id\":49407,"
           "\"pad_token_id\":1,\"projection_dim\":512},\"vision_config\":{\"hidden_size\":768,"
           "\"intermediate_size\":3072,\"num_attention_heads\":12,\"num_hidden_layers\":12,"
           "\"image_size\":224,\"patch_size\":32,\"num_channels\":3,\"hidden_act\":\"quick_gelu\","
           "\"layer_norm_eps\":1e-05,\"projection_dim\":512},\"torch_dtype\":\"float32\","
           "\"_note\":\"RANDOM WEIGHTS for speed work (tests/bench/gen_checkpoint.c)\"}";
}

static const struct {
    const char *family;
    const char *(*build)(void);
    const char *tokenizer_from; /* fixture folder whose tokenizer files to copy */
} families[] = {
    {"distilbert", distilbert, "tests/fixtures/distilbert-sst2-tiny"},
    {"gpt2", gpt2, "tests/fixtures/gpt2-tiny"},
    {"clip", clip, "tests/fixtures/clip-tiny"},
};

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: gen_checkpoint distilbert|gpt2|clip OUT_DIR\n");
        return 2;
    }
    for (size_t i = 0; i < sizeof families / sizeof *families; i++) {
        if (strcmp(argv[1], families[i].family) != 0)
            continue;
        const char *config = families[i].build();
        mkdir(argv[2], 0755);
        char cmd[2 * PATH_MAX + 256], path[PATH_MAX + 32], out[PATH_MAX];
        if (!realpath(argv[2], out))
            return 1;
        /* Tokenizer and preprocessing files from the fixture; config and weights ours. */
        snprintf(cmd, sizeof cmd, "cd %s && for f in *; do case $f in config.json|model.safetensors) "
                 ";; *) cp \"$f\" '%s'/ ;; esac; done", families[i].tokenizer_from, out);
        if (system(cmd) != 0)
            return 1;
        snprintf(path, sizeof path, "%s/config.json", out);
        FILE *f = fopen(path, "w");
        if (!f || fputs(config, f) < 0 || fclose(f))
            return 1;
        snprintf(path, sizeof path, "%s/model.safetensors", out);
        if (write_safetensors(path))
            return 1;
        printf("%s: %d tensors written to %s\n", argv[1], n_specs, argv[2]);
        return 0;
    }
    fprintf(stderr, "gen_checkpoint: unknown family %s\n", argv[1]);
    return 2;
}
