/* The model tests' shared fixtures: where the tiny models and their goldens
 * live, and the few steps every model test takes with them.
 *
 * - Loading: fixture_model_load (a tiny model, in any dtype), fixture_json_load
 *   (a golden or other JSON file), fixture_golden_read (a raw golden file, such
 *   as a logits dump or an image) and fixture_json_ids (a JSON id array).
 * - MODEL_TEST(name, dir, golden): a TEST whose body receives the model loaded
 *   from dir as `m` and the golden JSON file as `g` (NULL when golden is NULL),
 *   and frees both after it; the body is not run when either fails to load.
 * - Running: fixture_encode_text and fixture_classify (DistilBERT);
 *   fixture_kv_init, fixture_generate_step, the one-sequence fixture_seq_start
 *   and fixture_seq_feed, fixture_last_logits_read and fixture_argmax (GPT-2);
 *   fixture_clip_pixels, fixture_clip_embed_images and fixture_clip_embed_texts
 *   (CLIP). Each sizes and frees its own arena.
 *
 * Every helper records a test failure (with the library's error message) when
 * its step fails, so a caller needs no check of its own for that; a loader
 * returns NULL then. */
#ifndef FIXTURES_H
#define FIXTURES_H

#include <jansson.h>

#include "models/model.h"
#include "tests/unit/test.h"

#define FIXTURE_DISTILBERT "tests/fixtures/distilbert-sst2-tiny"
#define FIXTURE_GPT2 "tests/fixtures/gpt2-tiny"
#define FIXTURE_CLIP "tests/fixtures/clip-tiny"

#define FIXTURE_GOLDEN_DIR "tests/fixtures/golden/"
#define FIXTURE_DISTILBERT_GOLDEN FIXTURE_GOLDEN_DIR "distilbert.json"
#define FIXTURE_GPT2_GOLDEN FIXTURE_GOLDEN_DIR "gpt2.json"
#define FIXTURE_CLIP_GOLDEN FIXTURE_GOLDEN_DIR "clip.json"

/* ---- Loading --------------------------------------------------------------- */

/* Loads the model in dir with its weights held as dtype. The caller frees it
 * with model_free. */
model *fixture_model_load(const char *dir, eng_dtype dtype);

/* Parses the JSON file at path. The caller frees it with json_decref. */
json_t *fixture_json_load(const char *path);

/* Reads tests/fixtures/golden/<file> whole, as test_read_file does; *len may
 * be NULL. The caller frees it. */
void *fixture_golden_read(const char *file, size_t *len);

/* Copies the integers of the JSON array ids into out, at most cap of them;
 * returns how many it copied. */
int fixture_json_ids(const json_t *ids, int32_t *out, int cap);

typedef void (*fixture_body)(const model *m, json_t *g);

/* Loads the model in dir (FP32) and, unless golden is NULL, the JSON file
 * golden; runs body on them when both loaded, then frees both. */
void fixture_run(const char *dir, const char *golden, fixture_body body);

#define MODEL_TEST(name, dir, golden)                                               \
    static void name##_body(const model *m, json_t *g);                             \
    TEST(name)                                                                      \
    {                                                                               \
        fixture_run(dir, golden, name##_body);                                      \
    }                                                                               \
    static void name##_body(__attribute__((unused)) const model *m,                 \
                            __attribute__((unused)) json_t *g)

/* ---- DistilBERT: classification ------------------------------------------- */

/* Initialises enc and encodes text as the pipeline does (special tokens added,
 * at most 512 tokens). The caller frees enc with tok_encoding_free. */
void fixture_encode_text(const model *m, const char *text, tok_encoding *enc);

/* Classifies the n encoded sequences enc[0..n) as one batch; logits
 * (n, n_labels). */
void fixture_classify(const model *m, const tok_encoding *enc, int n, float *logits);

/* ---- GPT-2: generation ----------------------------------------------------- */

/* Allocates an empty cache of capacity tokens; the caller frees kv->data. */
void fixture_kv_init(const model *m, model_kv *kv, int capacity);

/* One generation step over n sequences as one batch: sequence i, whose cache
 * is kv[i], is fed new_ids[i][0..n_new[i]). logits (n, vocab_size), each the
 * logits after a sequence's last new token. */
void fixture_generate_step(const model *m, model_kv *const *kv, const int32_t *const *new_ids,
                           const int *n_new, int n, float *logits);

/* One sequence being generated: its tokens so far and its cache. */
typedef struct fixture_seq {
    int32_t ids[1024];
    int n;
    model_kv kv;
} fixture_seq;

/* Starts s on the JSON array prompt_ids with a cache of capacity tokens, and
 * feeds it the whole prompt; logits (vocab_size) after its last token. The
 * caller frees s->kv.data. */
void fixture_seq_start(const model *m, fixture_seq *s, const json_t *prompt_ids, int capacity,
                       float *logits);

/* Appends id to s and feeds it; logits (vocab_size) after it. */
void fixture_seq_feed(const model *m, fixture_seq *s, int32_t id, float *logits);

/* Reads the golden logits after the last prompt token of the golden forward
 * case f (vocab_size floats); *len may be NULL. The caller frees them. */
float *fixture_last_logits_read(const json_t *f, size_t *len);

/* The index of the largest of x[0..n), the first one on a tie. */
int32_t fixture_argmax(const float *x, int n);

/* ---- CLIP: image and text embeddings --------------------------------------- */

/* Decodes and preprocesses the golden images named by the JSON array files
 * (paths under tests/fixtures/golden) into pixels (*n, 3, S, S), S the model's
 * image_size. JPEG decoders differ by a level, so a .jpg is read from the
 * decoded PNG the golden keeps beside it. The caller frees the pixels. */
float *fixture_clip_pixels(const model *m, const json_t *files, int *n);

/* Projected image features (n, proj_dim), before normalisation, of pixels
 * (n, 3, S, S). */
void fixture_clip_embed_images(const model *m, const float *pixels, int n, float *out);

/* Projected text features (n, proj_dim), before normalisation, of the n
 * golden token-id rows ids (JSON arrays of at most 77 ids, padded with the
 * end-of-text id). */
void fixture_clip_embed_texts(const model *m, const json_t *ids, float *out);

#endif
