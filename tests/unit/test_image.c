/* Tests for models/image.h: decoding against the CLIP goldens, Pillow-exact
 * preprocessing, hostile inputs, base64 and preprocessor_config.json.
 *
 * The goldens (tests/fixtures/golden/clip.json) give sha256 digests, so this
 * file carries a small sha256 of its own. Synthetic images (16-bit, CMYK,
 * interlaced, ...) are written in-test with libpng and libjpeg. */
#include "tests/unit/test.h"

#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

#include <jansson.h>
#include <jpeglib.h>
#include <png.h>

#include "models/image.h"

#define GOLDEN "tests/fixtures/golden/"
#define CLIP_TINY "tests/fixtures/clip-tiny"

/* ------------------------------------------------------------------------ */
/* sha256 (FIPS 180-4), for comparing against the golden digests             */
/* ------------------------------------------------------------------------ */

typedef struct sha256 {
    uint32_t h[8];
    uint8_t buf[64];
    uint64_t n;
} sha256;

static const uint32_t sha256_k[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
    0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
    0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
    0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
    0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
    0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
    0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
    0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
    0xc67178f2};

static uint32_t ror(uint32_t x, int n)
{
    return (x >> n) | (x << (32 - n));
}

static void sha256_block(sha256 *s, const uint8_t *p)
{
    uint32_t w[64], v[8];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
               (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
    for (int i = 16; i < 64; i++)
        w[i] = w[i - 16] + (ror(w[i - 15], 7) ^ ror(w[i - 15], 18) ^ (w[i - 15] >> 3)) +
               w[i - 7] + (ror(w[i - 2], 17) ^ ror(w[i - 2], 19) ^ (w[i - 2] >> 10));
    memcpy(v, s->h, sizeof v);
    for (int i = 0; i < 64; i++) {
        uint32_t t1 = v[7] + (ror(v[4], 6) ^ ror(v[4], 11) ^ ror(v[4], 25)) +
                      ((v[4] & v[5]) ^ (~v[4] & v[6])) + sha256_k[i] + w[i];
        uint32_t t2 = (ror(v[0], 2) ^ ror(v[0], 13) ^ ror(v[0], 22)) +
                      ((v[0] & v[1]) ^ (v[0] & v[2]) ^ (v[1] & v[2]));
        memmove(v + 1, v, 7 * sizeof v[0]);
        v[4] += t1;
        v[0] = t1 + t2;
    }
    for (int i = 0; i < 8; i++)
        s->h[i] += v[i];
}

/* The hex digest of data[0..len) into hex (65 bytes). */
static void sha256_hex(const void *data, size_t len, char *hex)
{
    sha256 s = {{0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c,
                 0x1f83d9ab, 0x5be0cd19}, {0}, 0};
    const uint8_t *p = data;
    size_t i = 0;
    for (; i + 64 <= len; i += 64)
        sha256_block(&s, p + i);
    uint8_t tail[128] = {0};
    size_t r = len - i, n = r < 56 ? 64 : 128;
    memcpy(tail, p + i, r);
    tail[r] = 0x80;
    uint64_t bits = (uint64_t)len * 8;
    for (int b = 0; b < 8; b++)
        tail[n - 1 - b] = (uint8_t)(bits >> (8 * b));
    for (size_t o = 0; o < n; o += 64)
        sha256_block(&s, tail + o);
    for (int b = 0; b < 8; b++)
        snprintf(hex + 8 * b, 9, "%08x", s.h[b]);
}

TEST(image_sha256_known_answers)
{
    char hex[65];
    sha256_hex("", 0, hex);
    CHECK_STR(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    sha256_hex("abc", 3, hex);
    CHECK_STR(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    const char *m = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    sha256_hex(m, strlen(m), hex);
    CHECK_STR(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
}

/* ------------------------------------------------------------------------ */
/* Helpers                                                                  */
/* ------------------------------------------------------------------------ */

/* Decodes a file with the default limits; a failure is a test failure. */
static int decode_file(const char *path, img_rgb8 *img)
{
    size_t len;
    char *data = test_read_file(path, &len);
    if (!data)
        return -1;
    eng_err err = {0};
    int rc = img_decode((const uint8_t *)data, len, NULL, img, &err);
    free(data);
    CHECK_MSG(rc == 0, "decoding %s: %s", path, err.msg);
    return rc;
}

static json_t *load_clip_golden(void)
{
    json_error_t jerr;
    json_t *root = json_load_file(GOLDEN "clip.json", 0, &jerr);
    CHECK_MSG(root != NULL, "clip.json: %s", jerr.text);
    return root;
}

static const char *jstr(json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s ? s : "";
}

static long long jint(json_t *o, const char *key)
{
    return json_integer_value(json_object_get(o, key));
}

static size_t count_diff(const uint8_t *a, const uint8_t *b, size_t n, int *max_diff)
{
    size_t d = 0;
    *max_diff = 0;
    for (size_t i = 0; i < n; i++)
        if (a[i] != b[i]) {
            d++;
            int m = abs((int)a[i] - (int)b[i]);
            if (m > *max_diff)
                *max_diff = m;
        }
    return d;
}

/* ------------------------------------------------------------------------ */
/* Golden images                                                            */
/* ------------------------------------------------------------------------ */

/* Every golden image decodes to the size and, for PNG, the exact pixels that
 * Pillow's convert("RGB") gives. */
TEST(image_golden_decode)
{
    json_t *root = load_clip_golden();
    json_t *im;
    size_t i;
    json_array_foreach(json_object_get(root, "images"), i, im) {
        char path[512], hex[65];
        snprintf(path, sizeof path, GOLDEN "%s", jstr(im, "file"));
        img_rgb8 img;
        if (decode_file(path, &img))
            continue;
        CHECK_EQ_INT(img.w, jint(im, "width"));
        CHECK_EQ_INT(img.h, jint(im, "height"));
        sha256_hex(img.px, (size_t)img.w * img.h * 3, hex);
        if (strcmp(jstr(im, "format"), "JPEG") != 0) {
            CHECK_MSG(strcmp(hex, jstr(im, "decoded_rgb_sha256")) == 0, "%s (mode %s): decoded "
                      "RGB sha256 %s, golden %s", path, jstr(im, "mode"), hex,
                      jstr(im, "decoded_rgb_sha256"));
        } else {
            /* JPEG: exact only with the libjpeg-turbo Pillow used; the
             * .decoded.png beside it holds the pixels the goldens came from. */
            char ref_path[512];
            snprintf(ref_path, sizeof ref_path, "%.*s.decoded.png",
                     (int)(strlen(path) - 4), path);
            img_rgb8 ref;
            if (decode_file(ref_path, &ref) == 0) {
                int maxd;
                size_t nd = count_diff(img.px, ref.px, (size_t)img.w * img.h * 3, &maxd);
                printf("    %s: sha256 %s golden; %zu bytes differ from .decoded.png "
                       "(max %d)\n", path, strcmp(hex, jstr(im, "decoded_rgb_sha256")) ? "!=" :
                       "==", nd, maxd);
                CHECK_MSG(maxd <= 2, "%s: JPEG decode off by %d levels", path, maxd);
                sha256_hex(ref.px, (size_t)ref.w * ref.h * 3, hex);
                CHECK_STR(hex, jstr(im, "decoded_rgb_sha256"));
                img_rgb8_free(&ref);
            }
        }
        img_rgb8_free(&img);
    }
    json_decref(root);
}

/* Checks one golden image's preprocessing given its decoded pixels. */
static void check_golden_preprocess(json_t *im, const img_rgb8 *img, const img_preproc_cfg *cfg)
{
    const char *name = jstr(im, "file");
    uint32_t rw, rh;
    int64_t top, left;
    img_resize_geometry(img->w, img->h, cfg, &rw, &rh, &top, &left);
    CHECK_EQ_INT(rw, jint(im, "resized_width"));
    CHECK_EQ_INT(rh, jint(im, "resized_height"));
    CHECK_EQ_INT(top, jint(im, "crop_top"));
    CHECK_EQ_INT(left, jint(im, "crop_left"));

    uint8_t *crop = malloc(224 * 224 * 3);
    float *pv = malloc(3 * 224 * 224 * sizeof *pv);
    eng_err err = {0};
    int rc = img_clip_preprocess(img, cfg, crop, pv, &err);
    CHECK_MSG(rc == 0, "%s: %s", name, err.msg);

    char path[512], hex[65];
    snprintf(path, sizeof path, GOLDEN "%s", jstr(im, "crop_png"));
    img_rgb8 want;
    if (rc == 0 && decode_file(path, &want) == 0) {
        CHECK(want.w == 224 && want.h == 224);
        int maxd;
        size_t nd = count_diff(crop, want.px, 224 * 224 * 3, &maxd);
        CHECK_MSG(nd == 0, "%s: crop differs from %s in %zu bytes (max %d levels)", name,
                  path, nd, maxd);
        img_rgb8_free(&want);
    }
    sha256_hex(crop, 224 * 224 * 3, hex);
    CHECK_MSG(strcmp(hex, jstr(im, "crop_rgb_sha256")) == 0, "%s: crop sha256 %s", name, hex);

    json_t *s;
    size_t i;
    json_array_foreach(json_object_get(im, "pixel_values_samples"), i, s) {
        long long c = jint(s, "c"), y = jint(s, "y"), x = jint(s, "x");
        CHECK_NEAR(pv[(c * 224 + y) * 224 + x], json_real_value(json_object_get(s, "value")),
                   1e-5);
    }
    /* x86-64 and every platform we build for are little-endian. */
    sha256_hex(pv, 3 * 224 * 224 * sizeof *pv, hex);
    CHECK_MSG(strcmp(hex, jstr(im, "pixel_values_f32le_sha256")) == 0,
              "%s: pixel_values sha256 %s", name, hex);
    free(crop);
    free(pv);
}

/* Resize, crop and pixel_values for every golden image, from the pixels the
 * goldens were computed from (for the JPEG, its .decoded.png), so that this
 * test is about preprocessing alone. */
TEST(image_golden_preprocess)
{
    img_preproc_cfg cfg;
    eng_err err = {0};
    CHECK_EQ_INT(img_preproc_cfg_load(CLIP_TINY, &cfg, &err), 0);
    json_t *root = load_clip_golden();
    json_t *im;
    size_t i;
    json_array_foreach(json_object_get(root, "images"), i, im) {
        char path[512];
        const char *file = jstr(im, "file");
        if (strcmp(jstr(im, "format"), "JPEG") == 0)
            snprintf(path, sizeof path, GOLDEN "%.*s.decoded.png", (int)(strlen(file) - 4), file);
        else
            snprintf(path, sizeof path, GOLDEN "%s", file);
        img_rgb8 img;
        if (decode_file(path, &img))
            continue;
        check_golden_preprocess(im, &img, &cfg);
        img_rgb8_free(&img);
    }
    json_decref(root);
}

/* The demo model's example images decode and preprocess. */
TEST(image_demo_examples)
{
    static const char *files[] = {"blue_square.jpg", "green_triangle.png",
                                  "orange_cross_and_white_circle.png", "purple_heart.jpg",
                                  "red_circle.png", "yellow_star.png"};
    img_preproc_cfg cfg;
    img_preproc_cfg_default(&cfg);
    uint8_t *crop = malloc(224 * 224 * 3);
    float *pv = malloc(3 * 224 * 224 * sizeof *pv);
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        char path[256];
        snprintf(path, sizeof path, "models/demo/shapes-clip-small/examples/%s", files[i]);
        img_rgb8 img;
        if (decode_file(path, &img))
            continue;
        eng_err err = {0};
        CHECK_MSG(img_clip_preprocess(&img, &cfg, crop, pv, &err) == 0, "%s: %s", path, err.msg);
        /* green_triangle.png is already 224x224: resize and crop are the identity. */
        if (img.w == 224 && img.h == 224)
            CHECK(memcmp(crop, img.px, 224 * 224 * 3) == 0);
        img_rgb8_free(&img);
    }
    free(crop);
    free(pv);
}

/* ------------------------------------------------------------------------ */
/* Synthetic PNGs and JPEGs                                                 */
/* ------------------------------------------------------------------------ */

typedef struct membuf {
    uint8_t *p;
    size_t n, cap;
} membuf;

static void membuf_put(membuf *b, const void *data, size_t n)
{
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
    }
    memcpy(b->p + b->n, data, n);
    b->n += n;
}

static void png_write_cb(png_structp png, png_bytep data, size_t n)
{
    membuf_put(png_get_io_ptr(png), data, n);
}

static void png_flush_cb(png_structp png)
{
    (void)png;
}

typedef struct png_spec {
    uint32_t w, h;
    int bit_depth, color_type, interlace;
    const png_color *palette; /* color_type PALETTE */
    int n_palette;
    const uint8_t *trns;      /* palette alpha, n_trns entries */
    int n_trns;
} png_spec;

/* Encodes rows (h rows of libpng's packed raw layout, big-endian 16-bit) as
 * a PNG in memory. */
static membuf png_encode(const png_spec *s, uint8_t **rows)
{
    membuf b = {0};
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png_create_info_struct(png);
    if (setjmp(png_jmpbuf(png))) {
        test_fail(__FILE__, __LINE__, "libpng could not write the test image");
        png_destroy_write_struct(&png, &info);
        return b;
    }
    png_set_write_fn(png, &b, png_write_cb, png_flush_cb);
    png_set_IHDR(png, info, s->w, s->h, s->bit_depth, s->color_type, s->interlace,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    if (s->palette) {
        png_set_PLTE(png, info, s->palette, s->n_palette);
        png_set_check_for_invalid_index(png, 0); /* we test indices past the PLTE */
    }
    if (s->trns)
        png_set_tRNS(png, info, s->trns, s->n_trns, NULL);
    png_write_info(png, info);
    png_write_image(png, rows);
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    return b;
}

/* h rows of row_bytes each in one block behind their row pointers; one free()
 * releases both. */
static uint8_t **raw_rows(uint32_t h, size_t row_bytes)
{
    uint8_t **rows = malloc(h * sizeof *rows + (size_t)h * row_bytes);
    uint8_t *base = (uint8_t *)(rows + h);
    for (uint32_t y = 0; y < h; y++)
        rows[y] = base + (size_t)y * row_bytes;
    return rows;
}

static int decode_mem(const membuf *b, img_rgb8 *img, eng_err *err)
{
    return img_decode(b->p, b->n, NULL, img, err);
}

/* 16-bit colour keeps the high byte; 16-bit gray clamps at 255 (Pillow's
 * I;16 -> RGB); gray+alpha and RGBA drop alpha without compositing. */
TEST(image_png_16bit_and_alpha)
{
    const uint32_t w = 7, h = 3;
    static const struct { int type, ch; } kinds[] = {
        {PNG_COLOR_TYPE_GRAY, 1}, {PNG_COLOR_TYPE_GRAY_ALPHA, 2},
        {PNG_COLOR_TYPE_RGB, 3}, {PNG_COLOR_TYPE_RGB_ALPHA, 4}};
    for (int depth = 8; depth <= 16; depth += 8)
        for (size_t k = 0; k < 4; k++) {
            int ch = kinds[k].ch, bps = depth / 8;
            uint8_t **rows = raw_rows(h, (size_t)w * ch * bps);
            for (uint32_t y = 0; y < h; y++)
                for (uint32_t i = 0; i < w * ch * bps; i++)
                    rows[y][i] = (uint8_t)(y * 3 + i * 37 + (i % 2 ? 0 : y)); /* includes 0 MSBs */
            png_spec s = {w, h, depth, kinds[k].type, PNG_INTERLACE_NONE};
            membuf b = png_encode(&s, rows);
            img_rgb8 img;
            eng_err err = {0};
            CHECK_MSG(decode_mem(&b, &img, &err) == 0, "type %d depth %d: %s", kinds[k].type,
                      depth, err.msg);
            for (uint32_t y = 0; y < h && img.px; y++)
                for (uint32_t x = 0; x < w; x++)
                    for (int j = 0; j < 3; j++) {
                        const uint8_t *p = rows[y] + (size_t)x * ch * bps;
                        int src = ch >= 3 ? j : 0;
                        int want = p[src * bps];
                        if (depth == 16 && ch == 1)
                            want = p[0] ? 255 : p[1];
                        CHECK_EQ_INT(img.px[(y * w + x) * 3 + j], want);
                    }
            img_rgb8_free(&img);
            free(rows);
            free(b.p);
        }
}

/* 1, 2 and 4-bit gray scale to 0..255 (Pillow's modes 1, L;2, L;4). */
TEST(image_png_low_bit_gray)
{
    for (int depth = 1; depth <= 4; depth *= 2) {
        const uint32_t w = 13, h = 2;
        int max = (1 << depth) - 1, per_byte = 8 / depth;
        uint8_t **rows = raw_rows(h, (w + per_byte - 1) / per_byte);
        int vals[2][13];
        for (uint32_t y = 0; y < h; y++) {
            memset(rows[y], 0, (w + per_byte - 1) / per_byte);
            for (uint32_t x = 0; x < w; x++) {
                vals[y][x] = (int)(x + y) % (max + 1);
                int shift = 8 - depth * (int)(x % per_byte + 1);
                rows[y][x / per_byte] |= (uint8_t)(vals[y][x] << shift);
            }
        }
        png_spec s = {w, h, depth, PNG_COLOR_TYPE_GRAY, PNG_INTERLACE_NONE};
        membuf b = png_encode(&s, rows);
        img_rgb8 img;
        eng_err err = {0};
        CHECK_MSG(decode_mem(&b, &img, &err) == 0, "depth %d: %s", depth, err.msg);
        for (uint32_t y = 0; y < h && img.px; y++)
            for (uint32_t x = 0; x < w; x++)
                CHECK_EQ_INT(img.px[(y * w + x) * 3 + 1], vals[y][x] * 255 / max);
        img_rgb8_free(&img);
        free(rows);
        free(b.p);
    }
}

/* Palette images expand through PLTE, ignore tRNS, and map indices past the
 * palette's end to black (Pillow's zero-filled palette). */
TEST(image_png_palette)
{
    png_color pal[5] = {{10, 20, 30}, {200, 100, 0}, {1, 2, 3}, {255, 255, 255}, {9, 8, 7}};
    uint8_t trns[5] = {0, 128, 255, 7, 0};
    for (int depth = 1; depth <= 8; depth *= 2) {
        const uint32_t w = 11, h = 3;
        int per_byte = 8 / depth, n_idx = 1 << depth;
        int n_pal = n_idx < 5 ? n_idx : 4; /* at 4 and 8 bits, index 4+ is past PLTE */
        uint8_t **rows = raw_rows(h, (w + per_byte - 1) / per_byte);
        int idx[3][11];
        for (uint32_t y = 0; y < h; y++) {
            memset(rows[y], 0, (w + per_byte - 1) / per_byte);
            for (uint32_t x = 0; x < w; x++) {
                idx[y][x] = (int)(x * 3 + y) % (n_idx < 6 ? n_idx : 6);
                rows[y][x / per_byte] |= (uint8_t)(idx[y][x] << (8 - depth * (int)(x % per_byte + 1)));
            }
        }
        png_spec s = {w, h, depth, PNG_COLOR_TYPE_PALETTE, PNG_INTERLACE_NONE, pal, n_pal,
                      trns, n_pal};
        membuf b = png_encode(&s, rows);
        img_rgb8 img;
        eng_err err = {0};
        CHECK_MSG(decode_mem(&b, &img, &err) == 0, "depth %d: %s", depth, err.msg);
        for (uint32_t y = 0; y < h && img.px; y++)
            for (uint32_t x = 0; x < w; x++) {
                png_color c = idx[y][x] < n_pal ? pal[idx[y][x]] : (png_color){0, 0, 0};
                const uint8_t *p = img.px + (y * w + x) * 3;
                CHECK_MSG(p[0] == c.red && p[1] == c.green && p[2] == c.blue,
                          "depth %d (%u,%u) index %d: got %d,%d,%d", depth, x, y, idx[y][x],
                          p[0], p[1], p[2]);
            }
        img_rgb8_free(&img);
        free(rows);
        free(b.p);
    }
}

/* An Adam7-interlaced PNG decodes to the same pixels as a plain one. */
TEST(image_png_interlaced)
{
    const uint32_t w = 37, h = 23;
    static const int types[] = {PNG_COLOR_TYPE_RGB, PNG_COLOR_TYPE_GRAY, PNG_COLOR_TYPE_RGB_ALPHA};
    static const int chans[] = {3, 1, 4};
    for (int t = 0; t < 3; t++) {
        uint8_t **rows = raw_rows(h, (size_t)w * chans[t]);
        for (uint32_t y = 0; y < h; y++)
            for (uint32_t i = 0; i < w * (uint32_t)chans[t]; i++)
                rows[y][i] = (uint8_t)(i * 7 + y * 13);
        png_spec plain = {w, h, 8, types[t], PNG_INTERLACE_NONE};
        png_spec adam7 = {w, h, 8, types[t], PNG_INTERLACE_ADAM7};
        membuf b1 = png_encode(&plain, rows), b2 = png_encode(&adam7, rows);
        img_rgb8 i1, i2;
        eng_err err = {0};
        CHECK_MSG(decode_mem(&b1, &i1, &err) == 0, "%s", err.msg);
        CHECK_MSG(decode_mem(&b2, &i2, &err) == 0, "interlaced: %s", err.msg);
        CHECK(b1.n != b2.n || memcmp(b1.p, b2.p, b1.n) != 0);
        CHECK(i1.px && i2.px && memcmp(i1.px, i2.px, (size_t)w * h * 3) == 0);
        img_rgb8_free(&i1);
        img_rgb8_free(&i2);
        free(rows);
        free(b1.p);
        free(b2.p);
    }
}

/* Encodes a constant-colour JPEG at quality 100 (whose pixels then survive
 * exactly) with the given input and stored colour spaces. */
static membuf jpeg_encode_const(int comps, J_COLOR_SPACE in, J_COLOR_SPACE stored,
                                const uint8_t *color, bool progressive)
{
    struct jpeg_compress_struct ci;
    struct jpeg_error_mgr jerr;
    ci.err = jpeg_std_error(&jerr);
    jpeg_create_compress(&ci);
    unsigned char *out = NULL;
    unsigned long out_len = 0;
    jpeg_mem_dest(&ci, &out, &out_len);
    ci.image_width = 24;
    ci.image_height = 16;
    ci.input_components = comps;
    ci.in_color_space = in;
    jpeg_set_defaults(&ci);
    jpeg_set_colorspace(&ci, stored);
    jpeg_set_quality(&ci, 100, TRUE);
    if (progressive)
        jpeg_simple_progression(&ci);
    jpeg_start_compress(&ci, TRUE);
    uint8_t row[24 * 4];
    for (int x = 0; x < 24; x++)
        memcpy(row + x * comps, color, (size_t)comps);
    while (ci.next_scanline < ci.image_height) {
        JSAMPROW r = row;
        jpeg_write_scanlines(&ci, &r, 1);
    }
    jpeg_finish_compress(&ci);
    jpeg_destroy_compress(&ci);
    membuf b = {out, out_len, out_len};
    return b;
}

static void check_const(const img_rgb8 *img, int r, int g, int b, int tol, const char *what)
{
    CHECK_MSG(img->px != NULL, "%s: no pixels", what);
    for (size_t i = 0; img->px && i < (size_t)img->w * img->h; i++) {
        const uint8_t *p = img->px + 3 * i;
        if (abs(p[0] - r) > tol || abs(p[1] - g) > tol || abs(p[2] - b) > tol) {
            test_fail(__FILE__, __LINE__, "%s: pixel %zu is %d,%d,%d, want %d,%d,%d", what, i,
                      p[0], p[1], p[2], r, g, b);
            return;
        }
    }
}

/* Gray JPEGs replicate; 4-channel JPEGs are inverted CMYK for Pillow (every
 * one, Adobe marker or not) and convert as R = nk - MULDIV255(255 - c, nk)
 * with nk the stored K. The expected values are worked out by hand from
 * Pillow's cmyk2rgb. */
TEST(image_jpeg_gray_and_cmyk)
{
    static const uint8_t gray = 77;
    membuf g = jpeg_encode_const(1, JCS_GRAYSCALE, JCS_GRAYSCALE, &gray, false);
    img_rgb8 img;
    eng_err err = {0};
    CHECK_MSG(decode_mem(&g, &img, &err) == 0, "gray: %s", err.msg);
    check_const(&img, 77, 77, 77, 0, "gray JPEG");
    img_rgb8_free(&img);
    free(g.p);

    static const uint8_t cmyk[4] = {255, 0, 128, 200};
    membuf c = jpeg_encode_const(4, JCS_CMYK, JCS_CMYK, cmyk, false);
    CHECK_MSG(decode_mem(&c, &img, &err) == 0, "cmyk: %s", err.msg);
    check_const(&img, 200, 0, 100, 0, "CMYK JPEG");
    img_rgb8_free(&img);
    free(c.p);

    /* YCCK goes through libjpeg's colour conversion, so allow a level. */
    membuf y = jpeg_encode_const(4, JCS_CMYK, JCS_YCCK, cmyk, false);
    CHECK_MSG(decode_mem(&y, &img, &err) == 0, "ycck: %s", err.msg);
    check_const(&img, 200, 0, 100, 1, "YCCK JPEG");
    img_rgb8_free(&img);
    free(y.p);

    static const uint8_t rgb[3] = {10, 200, 90};
    membuf p = jpeg_encode_const(3, JCS_RGB, JCS_YCbCr, rgb, true);
    CHECK_MSG(decode_mem(&p, &img, &err) == 0, "progressive: %s", err.msg);
    check_const(&img, 10, 200, 90, 2, "progressive JPEG");
    img_rgb8_free(&img);
    free(p.p);
}

/* ------------------------------------------------------------------------ */
/* Hostile and broken input                                                 */
/* ------------------------------------------------------------------------ */

static int decode_code(const uint8_t *data, size_t len, const img_limits *lim, eng_err *err)
{
    img_rgb8 img = {(uint8_t *)1, 1, 1}; /* garbage that img_decode must clear */
    int rc = img_decode(data, len, lim, &img, err);
    if (rc)
        CHECK(img.px == NULL && img.w == 0 && img.h == 0);
    img_rgb8_free(&img);
    return rc;
}

TEST(image_bad_input_empty_and_unknown)
{
    eng_err err = {0};
    CHECK_EQ_INT(decode_code(NULL, 0, NULL, &err), ENG_EFORMAT);
    CHECK_EQ_INT(decode_code((const uint8_t *)"", 0, NULL, &err), ENG_EFORMAT);
    CHECK(strstr(err.msg, "empty") != NULL);
    CHECK_EQ_INT(decode_code((const uint8_t *)"hello, world", 12, NULL, &err), ENG_EFORMAT);
    CHECK_EQ_INT(decode_code((const uint8_t *)"GIF89a\1\0\1\0", 10, NULL, &err),
                 ENG_EUNSUPPORTED);
    CHECK(strstr(err.msg, "GIF") != NULL);
    CHECK_EQ_INT(decode_code((const uint8_t *)"RIFF\0\0\0\0WEBPVP8 ", 16, NULL, &err),
                 ENG_EUNSUPPORTED);
    /* Magic bytes alone, then random bytes behind each magic. */
    CHECK_EQ_INT(decode_code((const uint8_t *)"\x89PNG\r\n\x1a\n", 8, NULL, &err), ENG_EFORMAT);
    CHECK_EQ_INT(decode_code((const uint8_t *)"\xff\xd8\xff", 3, NULL, &err), ENG_EFORMAT);
    uint8_t buf[4096];
    uint32_t seed = 12345;
    for (int round = 0; round < 60; round++) {
        size_t n = 1 + (size_t)(round * 67) % sizeof buf;
        for (size_t i = 0; i < n; i++)
            buf[i] = (uint8_t)((seed = seed * 1103515245u + 12345u) >> 16);
        if (round % 3 == 1 && n >= 8)
            memcpy(buf, "\x89PNG\r\n\x1a\n", 8);
        if (round % 3 == 2 && n >= 3)
            memcpy(buf, "\xff\xd8\xff", 3);
        int rc = decode_code(buf, n, NULL, &err);
        CHECK_MSG(rc == ENG_EFORMAT || rc == ENG_EUNSUPPORTED, "random bytes %d: rc %d (%s)",
                  round, rc, err.msg);
    }
}

/* A file cut anywhere inside its pixel data is an error, never a crash or a
 * half-gray image. A PNG cut after its pixels (no IEND) still decodes, as
 * with Pillow, whose load_end stops quietly at the end of the file. */
static void check_truncations(const char *path, const size_t *cuts, size_t n_cuts,
                              size_t ok_tail)
{
    size_t len;
    char *data = test_read_file(path, &len);
    if (!data)
        return;
    for (size_t i = 0; i < n_cuts; i++) {
        size_t cut = cuts[i] < len ? cuts[i] : len / 2;
        uint8_t *copy = malloc(cut ? cut : 1);
        memcpy(copy, data, cut);
        eng_err err = {0};
        int rc = decode_code(copy, cut, NULL, &err);
        CHECK_MSG(rc == ENG_EFORMAT, "%s cut at %zu of %zu: rc %d", path, cut, len, rc);
        free(copy);
    }
    img_rgb8 img;
    eng_err err = {0};
    CHECK_MSG(img_decode((const uint8_t *)data, len - ok_tail, NULL, &img, &err) == 0,
              "%s without its last %zu bytes: %s", path, ok_tail, err.msg);
    img_rgb8_free(&img);
    free(data);
}

TEST(image_truncated_png)
{
    /* 8: signature only; 20: inside IHDR; 33: IHDR whole, no IDAT; then the
     * pixel data. The last 12 bytes are IEND. */
    static const size_t cuts[] = {1, 8, 20, 33, 60, 500, 5000, 20000, (size_t)-1};
    check_truncations(GOLDEN "images/gradient_640x480.png", cuts, 9, 12);
    check_truncations(GOLDEN "images/palette_400x300.png", cuts, 6, 12);
}

TEST(image_truncated_jpeg)
{
    /* 2: SOI only; then inside the tables, at the scan start, in the scan;
     * finally only the EOI missing, which Pillow reports as "image file is
     * truncated" because libjpeg's Huffman decoder reads ahead into it. */
    size_t len;
    char *jpg = test_read_file(GOLDEN "images/shapes_512x384_q90.jpg", &len);
    if (!jpg)
        return;
    size_t cuts[] = {2, 4, 20, 100, 300, 700, 2000, 10000, len / 2, len - 2};
    check_truncations(GOLDEN "images/shapes_512x384_q90.jpg", cuts, 10, 0);
    free(jpg);
}

static uint32_t crc32_of(const uint8_t *p, size_t n)
{
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++)
            c = (c >> 1) ^ (0xedb88320u & -(c & 1));
    }
    return ~c;
}

static void put_be32(membuf *b, uint32_t v)
{
    uint8_t x[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
    membuf_put(b, x, 4);
}

static void put_chunk(membuf *b, const char *type, const uint8_t *data, uint32_t n)
{
    put_be32(b, n);
    size_t at = b->n;
    membuf_put(b, type, 4);
    if (n)
        membuf_put(b, data, n);
    put_be32(b, crc32_of(b->p + at, n + 4));
}

/* A valid PNG header claiming 100000 x 100000 RGB (30 GB of pixels) with a
 * few bytes of IDAT is refused from its header: ETOOLONG, not ENOMEM, not an
 * attempt to inflate. */
TEST(image_decompression_bomb_png)
{
    membuf b = {0};
    membuf_put(&b, "\x89PNG\r\n\x1a\n", 8);
    uint8_t ihdr[13] = {0, 1, 0x86, 0xa0, 0, 1, 0x86, 0xa0, 8, 2, 0, 0, 0};
    put_chunk(&b, "IHDR", ihdr, 13);
    static const uint8_t idat[] = {0x78, 0x9c, 0x63, 0x00, 0x00, 0x00, 0x01, 0x00, 0x01};
    put_chunk(&b, "IDAT", idat, sizeof idat);
    put_chunk(&b, "IEND", NULL, 0);
    eng_err err = {0};
    CHECK_EQ_INT(decode_code(b.p, b.n, NULL, &err), ENG_ETOOLONG);
    CHECK(strstr(err.msg, "100000x100000") != NULL);
    /* The limit is inclusive: one pixel short of the claim is still refused. */
    img_limits lim = {0, 100000ull * 100000 - 1};
    CHECK_EQ_INT(decode_code(b.p, b.n, &lim, &err), ENG_ETOOLONG);
    free(b.p);
}

TEST(image_limits)
{
    size_t len;
    char *png = test_read_file(GOLDEN "images/gradient_640x480.png", &len);
    char *jpg_data;
    size_t jpg_len;
    jpg_data = test_read_file(GOLDEN "images/shapes_512x384_q90.jpg", &jpg_len);
    if (!png || !jpg_data)
        return;
    eng_err err = {0};
    img_limits bytes = {len - 1, 0};
    CHECK_EQ_INT(decode_code((uint8_t *)png, len, &bytes, &err), ENG_ETOOLONG);
    bytes.max_bytes = len;
    img_rgb8 img;
    CHECK_EQ_INT(img_decode((uint8_t *)png, len, &bytes, &img, &err), 0);
    img_rgb8_free(&img);
    img_limits px = {0, 640 * 480 - 1};
    CHECK_EQ_INT(decode_code((uint8_t *)png, len, &px, &err), ENG_ETOOLONG);
    px.max_pixels = 512 * 384 - 1;
    CHECK_EQ_INT(decode_code((uint8_t *)jpg_data, jpg_len, &px, &err), ENG_ETOOLONG);
    px.max_pixels = 512 * 384;
    CHECK_EQ_INT(img_decode((uint8_t *)jpg_data, jpg_len, &px, &img, &err), 0);
    img_rgb8_free(&img);
    free(png);
    free(jpg_data);
}

/* ---- progressive JPEG scan bombs ---- */

/* Huffman-coded bits into a JPEG entropy segment (0xFF stuffed with 0x00). */
typedef struct bitwriter {
    membuf *b;
    unsigned acc, n;
} bitwriter;

static void bits_put(bitwriter *w, unsigned v, unsigned n)
{
    while (n--) {
        w->acc = (w->acc << 1) | ((v >> n) & 1);
        if (++w->n == 8) {
            uint8_t byte = (uint8_t)w->acc, zero = 0;
            membuf_put(w->b, &byte, 1);
            if (byte == 0xff)
                membuf_put(w->b, &zero, 1);
            w->acc = w->n = 0;
        }
    }
}

static void bits_flush(bitwriter *w)
{
    while (w->n)
        bits_put(w, 1, 1);
}

static void jpeg_segment(membuf *b, uint8_t marker, const uint8_t *data, size_t n)
{
    uint8_t head[4] = {0xff, marker, (uint8_t)((n + 2) >> 8), (uint8_t)(n + 2)};
    membuf_put(b, head, 4);
    membuf_put(b, data, n);
}

/* A w x h gray progressive JPEG: a DC scan of zeros (mid-gray), then
 * ac_scans AC scans of nothing but end-of-band runs -- a few bytes each, yet
 * each a pass over every block. The scans repeat, which libjpeg tolerates. */
static membuf jpeg_scan_bomb(unsigned w, unsigned h, int ac_scans)
{
    membuf b = {0};
    unsigned blocks = ((w + 7) / 8) * ((h + 7) / 8);
    membuf_put(&b, "\xff\xd8", 2);
    uint8_t dqt[65] = {0};
    memset(dqt + 1, 1, 64);
    jpeg_segment(&b, 0xdb, dqt, sizeof dqt);
    uint8_t sof[] = {8, (uint8_t)(h >> 8), (uint8_t)h, (uint8_t)(w >> 8), (uint8_t)w, 1, 1, 0x11, 0};
    jpeg_segment(&b, 0xc2, sof, sizeof sof);
    uint8_t dc[18] = {0x00, 1}; /* one 1-bit code: category 0 */
    jpeg_segment(&b, 0xc4, dc, sizeof dc);
    uint8_t ac[32] = {0x10, 0, 0, 0, 15}; /* fifteen 4-bit codes: EOB runs 2^0 .. 2^14 */
    for (int r = 0; r < 15; r++)
        ac[17 + r] = (uint8_t)(r << 4);
    jpeg_segment(&b, 0xc4, ac, sizeof ac);
    uint8_t sos_dc[] = {1, 1, 0x00, 0, 0, 0}, sos_ac[] = {1, 1, 0x00, 1, 63, 0};
    jpeg_segment(&b, 0xda, sos_dc, sizeof sos_dc);
    bitwriter bw = {&b, 0, 0};
    for (unsigned i = 0; i < blocks; i++)
        bits_put(&bw, 0, 1);
    bits_flush(&bw);
    for (int s = 0; s < ac_scans; s++) {
        jpeg_segment(&b, 0xda, sos_ac, sizeof sos_ac);
        for (unsigned left = blocks; left;) {
            unsigned run = left < 32767 ? left : 32767, r = 0;
            while (run >> (r + 1))
                r++;
            bits_put(&bw, r, 4);
            bits_put(&bw, run - (1u << r), r);
            left -= run;
        }
        bits_flush(&bw);
    }
    membuf_put(&b, "\xff\xd9", 2);
    return b;
}

/* The scans a progressive JPEG may have shrink as the image grows
 * (img_limits.max_scan_pixels), never below 16: a small file cannot buy
 * minutes of CPU with a thousand empty scans. */
TEST(image_jpeg_scan_budget)
{
    membuf ten = jpeg_scan_bomb(256, 256, 9), forty = jpeg_scan_bomb(256, 256, 39);
    img_limits budget16 = {.max_scan_pixels = 16 * 65536}, budget32 = {.max_scan_pixels = 32 * 65536};
    img_rgb8 img;
    eng_err err = {0};
    CHECK_MSG(img_decode(ten.p, ten.n, &budget16, &img, &err) == 0, "10 scans: %s", err.msg);
    check_const(&img, 128, 128, 128, 0, "10 empty scans");
    img_rgb8_free(&img);
    CHECK_EQ_INT(decode_code(forty.p, forty.n, &budget16, &err), ENG_EFORMAT);
    CHECK_MSG(strstr(err.msg, "more than 16 scans for a 256x256 image"), "%s", err.msg);
    CHECK_EQ_INT(decode_code(forty.p, forty.n, &budget32, &err), ENG_EFORMAT);
    CHECK_MSG(strstr(err.msg, "more than 32 scans"), "%s", err.msg);
    /* A budget below 16 full scans still allows 16. */
    img_limits tiny = {.max_scan_pixels = 65536};
    CHECK_MSG(img_decode(ten.p, ten.n, &tiny, &img, &err) == 0, "floor of 16: %s", err.msg);
    img_rgb8_free(&img);
    /* By default a 256x256 image may have up to 1000 scans. */
    CHECK_MSG(img_decode(forty.p, forty.n, NULL, &img, &err) == 0, "default: %s", err.msg);
    img_rgb8_free(&img);
    free(ten.p);
    free(forty.p);
}

/* Corrupted files (bytes overwritten at random) decode or fail cleanly; the
 * ASan+UBSan build is where this test earns its keep. */
TEST(image_corrupted_files_never_crash)
{
    static const char *files[] = {GOLDEN "images/small_100x60.png",
                                  GOLDEN "images/palette_400x300.png",
                                  GOLDEN "images/shapes_512x384_q90.jpg"};
    uint32_t seed = 99;
    for (int f = 0; f < 3; f++) {
        size_t len;
        char *data = test_read_file(files[f], &len);
        if (!data)
            continue;
        uint8_t *copy = malloc(len);
        for (int round = 0; round < 150; round++) {
            memcpy(copy, data, len);
            int n_flips = 1 + round % 8;
            for (int k = 0; k < n_flips; k++) {
                seed = seed * 1103515245u + 12345u;
                size_t at = 8 + (seed >> 8) % (len - 8); /* keep the magic */
                copy[at] = (uint8_t)(seed >> 3);
            }
            eng_err err = {0};
            img_rgb8 img;
            int rc = img_decode(copy, len, NULL, &img, &err);
            CHECK_MSG(rc == 0 || rc == ENG_EFORMAT || rc == ENG_ETOOLONG,
                      "%s round %d: rc %d (%s)", files[f], round, rc, err.msg);
            img_rgb8_free(&img);
        }
        free(copy);
        free(data);
    }
}

/* ------------------------------------------------------------------------ */
/* Base64                                                                   */
/* ------------------------------------------------------------------------ */

static char *b64_encode(const uint8_t *p, size_t n, bool url, bool pad)
{
    const char *std = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const char *safe = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    const char *a = url ? safe : std;
    char *out = malloc(n / 3 * 4 + 5), *o = out;
    if (!out)
        abort(); /* a test helper: no memory is no test */
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (i + 1 < n ? p[i + 1] << 8 : 0) |
                     (i + 2 < n ? p[i + 2] : 0);
        size_t k = n - i >= 3 ? 4 : n - i + 1;
        for (size_t j = 0; j < 4; j++)
            if (j < k)
                *o++ = a[(v >> (18 - 6 * j)) & 63];
            else if (pad)
                *o++ = '=';
    }
    *o = '\0';
    return out;
}

static int b64(const char *s, uint8_t **out, size_t *n, eng_err *err)
{
    return img_base64_decode(s, strlen(s), 1 << 20, out, n, err);
}

TEST(image_base64)
{
    uint8_t *out;
    size_t n;
    eng_err err = {0};
    static const struct { const char *in, *want; } ok[] = {
        {"", ""}, {"Zg==", "f"}, {"Zg", "f"}, {"Zm8=", "fo"}, {"Zm8", "fo"}, {"Zm9v", "foo"},
        {"Zm9vYg", "foob"}, {"Zm9vYmFy", "foobar"}, {" Zm9v\r\nYmFy\n", "foobar"},
        {"data:image/png;base64,Zm9vYg==", "foob"}, {"DATA:image/jpeg;BASE64,Zm8", "fo"},
        {"data:;base64,", ""}, {"-_-_", "\xfb\xff\xbf"}, {"+/+/", "\xfb\xff\xbf"},
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        int rc = b64(ok[i].in, &out, &n, &err);
        CHECK_MSG(rc == 0, "\"%s\": %s", ok[i].in, err.msg);
        if (rc == 0) {
            CHECK_MSG(n == strlen(ok[i].want) && memcmp(out, ok[i].want, n) == 0, "\"%s\"",
                      ok[i].in);
            free(out);
        }
    }
    static const char *bad[] = {"Zm9v!", "Zm9v YmF*", "Z", "Zm9vY", "Zg=", "Zg===", "Zg==Zg==",
                                "=Zg=", "Zm9v\x80", "data:image/png,Zm9v",
                                "data:image/png;base64Zm9v", "Zm9\0v"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        size_t len = i == sizeof bad / sizeof bad[0] - 1 ? 5 : strlen(bad[i]);
        CHECK_EQ_INT(img_base64_decode(bad[i], len, 1 << 20, &out, &n, &err), ENG_EFORMAT);
        CHECK(out == NULL);
    }
    CHECK_EQ_INT(img_base64_decode("Zm9vYmFy", 8, 5, &out, &n, &err), ENG_ETOOLONG);
    CHECK_EQ_INT(img_base64_decode("Zm9vYmFy", 8, 6, &out, &n, &err), 0);
    free(out);

    /* A whole image through every alphabet and padding choice, then decoded. */
    size_t len;
    char *png = test_read_file(GOLDEN "images/small_100x60.png", &len);
    for (int v = 0; png && v < 4; v++) {
        char *enc = b64_encode((uint8_t *)png, len, v & 1, v & 2);
        size_t url_len = strlen(enc) + 32;
        char *url = malloc(url_len);
        if (!url)
            break;
        snprintf(url, url_len, "data:image/png;base64,%s", enc);
        CHECK_EQ_INT(b64(v == 3 ? url : enc, &out, &n, &err), 0);
        CHECK(n == len && memcmp(out, png, len) == 0);
        img_rgb8 img;
        CHECK_EQ_INT(img_decode(out, n, NULL, &img, &err), 0);
        CHECK_EQ_INT(img.w, 100);
        img_rgb8_free(&img);
        free(out);
        free(enc);
        free(url);
    }
    free(png);
}

/* ------------------------------------------------------------------------ */
/* preprocessor_config.json                                                 */
/* ------------------------------------------------------------------------ */

/* Writes json as preprocessor_config.json in a fresh temporary directory
 * (dir, 64 bytes) and loads it. */
static int load_cfg_text(const char *json, img_preproc_cfg *cfg, eng_err *err, char *dir)
{
    strcpy(dir, "/tmp/predictd-imgcfg-XXXXXX");
    if (!mkdtemp(dir)) {
        test_fail(__FILE__, __LINE__, "mkdtemp failed");
        return -100;
    }
    char path[128];
    snprintf(path, sizeof path, "%s/preprocessor_config.json", dir);
    FILE *f = fopen(path, "w");
    fputs(json, f);
    fclose(f);
    int rc = img_preproc_cfg_load(dir, cfg, err);
    unlink(path);
    rmdir(dir);
    return rc;
}

static void check_clip_defaults(const img_preproc_cfg *c)
{
    CHECK_EQ_INT(c->shortest_edge, 224);
    CHECK(c->crop_h == 224 && c->crop_w == 224);
    CHECK(c->do_resize && c->do_center_crop && c->do_rescale && c->do_normalize &&
          c->do_convert_rgb);
    CHECK(c->rescale_factor == 1.0 / 255.0);
    CHECK(c->mean[0] == 0.48145466f && c->mean[1] == 0.4578275f && c->mean[2] == 0.40821073f);
    CHECK(c->std[0] == 0.26862954f && c->std[1] == 0.26130258f && c->std[2] == 0.27577711f);
}

TEST(image_preproc_cfg_forms)
{
    img_preproc_cfg cfg;
    eng_err err = {0};
    char dir[64];
    /* The modern form, as saved by a recent save_pretrained(). */
    CHECK_EQ_INT(img_preproc_cfg_load(CLIP_TINY, &cfg, &err), 0);
    check_clip_defaults(&cfg);
    /* openai/clip-vit-base-patch32's legacy form. */
    const char *legacy = "{\"crop_size\": 224, \"do_center_crop\": true, \"do_normalize\": true,"
        "\"do_resize\": true, \"feature_extractor_type\": \"CLIPFeatureExtractor\","
        "\"image_mean\": [0.48145466, 0.4578275, 0.40821073],"
        "\"image_std\": [0.26862954, 0.26130258, 0.27577711], \"resample\": 3, \"size\": 224}";
    CHECK_MSG(load_cfg_text(legacy, &cfg, &err, dir) == 0, "%s", err.msg);
    check_clip_defaults(&cfg);
    /* An empty object is all defaults; other values are read. */
    CHECK_EQ_INT(load_cfg_text("{}", &cfg, &err, dir), 0);
    check_clip_defaults(&cfg);
    CHECK_EQ_INT(load_cfg_text("{\"size\": {\"shortest_edge\": 336}, \"crop_size\": [336, 320],"
                               "\"image_mean\": 0.5, \"image_std\": [1, 2, 4],"
                               "\"rescale_factor\": 0.5, \"do_normalize\": false}",
                               &cfg, &err, dir), 0);
    CHECK(cfg.shortest_edge == 336 && cfg.crop_h == 336 && cfg.crop_w == 320);
    CHECK(cfg.mean[2] == 0.5f && cfg.std[2] == 4.0f && cfg.rescale_factor == 0.5);
    CHECK(!cfg.do_normalize);
    /* An exact resize without a crop: the crop is then the resize. */
    CHECK_EQ_INT(load_cfg_text("{\"size\": {\"height\": 200, \"width\": 300},"
                               "\"do_center_crop\": false}", &cfg, &err, dir), 0);
    CHECK(cfg.shortest_edge == 0 && cfg.size_h == 200 && cfg.size_w == 300);
    CHECK(cfg.crop_h == 200 && cfg.crop_w == 300);
}

TEST(image_preproc_cfg_errors)
{
    img_preproc_cfg cfg;
    eng_err err = {0};
    char dir[64];
    CHECK_EQ_INT(img_preproc_cfg_load("tests/fixtures/gpt2-tiny", &cfg, &err), ENG_ENOTFOUND);
    CHECK(strstr(err.msg, "preprocessor_config.json") != NULL);
    static const struct { const char *json; int code; const char *key; } bad[] = {
        {"{\"size\": ", ENG_EFORMAT, "preprocessor_config.json"},
        {"[224]", ENG_EFORMAT, "JSON object"},
        {"{\"size\": \"224\"}", ENG_EFORMAT, "size"},
        {"{\"size\": 0}", ENG_EFORMAT, "size"},
        {"{\"size\": {\"height\": 224}}", ENG_EFORMAT, "size"},
        {"{\"crop_size\": {\"shortest_edge\": 224}}", ENG_EFORMAT, "crop_size"},
        {"{\"crop_size\": [224, 224, 3]}", ENG_EFORMAT, "crop_size"},
        {"{\"crop_size\": 100000}", ENG_EFORMAT, "crop_size"},
        {"{\"do_resize\": 1}", ENG_EFORMAT, "do_resize"},
        {"{\"image_mean\": [0.5, 0.5]}", ENG_EFORMAT, "image_mean"},
        {"{\"image_std\": [1, 0, 1]}", ENG_EFORMAT, "image_std"},
        {"{\"rescale_factor\": \"1/255\"}", ENG_EFORMAT, "rescale_factor"},
        {"{\"resample\": 2}", ENG_EUNSUPPORTED, "resample"},
        {"{\"do_center_crop\": false}", ENG_EUNSUPPORTED, "do_center_crop"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int rc = load_cfg_text(bad[i].json, &cfg, &err, dir);
        CHECK_MSG(rc == bad[i].code, "%s: rc %d (%s)", bad[i].json, rc, err.msg);
        CHECK_MSG(strstr(err.msg, bad[i].key) != NULL, "%s: message \"%s\" does not name %s",
                  bad[i].json, err.msg, bad[i].key);
    }
    /* Without a resize, bilinear would never be used: accepted. */
    CHECK_EQ_INT(load_cfg_text("{\"resample\": 2, \"do_resize\": false}", &cfg, &err, dir), 0);
}

/* Data after the end of the image (some uploaders append bytes) is ignored. */
TEST(image_trailing_garbage)
{
    static const char *files[] = {GOLDEN "images/small_100x60.png",
                                  GOLDEN "images/shapes_512x384_q90.jpg"};
    for (int f = 0; f < 2; f++) {
        size_t len;
        char *data = test_read_file(files[f], &len);
        if (!data)
            continue;
        uint8_t *copy = malloc(len + 100);
        memcpy(copy, data, len);
        for (int i = 0; i < 100; i++)
            copy[len + i] = (uint8_t)(i * 31 + 7);
        img_rgb8 a, b;
        eng_err err = {0};
        CHECK_EQ_INT(img_decode((uint8_t *)data, len, NULL, &a, &err), 0);
        CHECK_MSG(img_decode(copy, len + 100, NULL, &b, &err) == 0, "%s: %s", files[f], err.msg);
        CHECK(a.px && b.px && memcmp(a.px, b.px, (size_t)a.w * a.h * 3) == 0);
        img_rgb8_free(&a);
        img_rgb8_free(&b);
        free(copy);
        free(data);
    }
}

/* ------------------------------------------------------------------------ */
/* Preprocessing beyond the goldens                                         */
/* ------------------------------------------------------------------------ */

static img_rgb8 synthetic(uint32_t w, uint32_t h, uint32_t seed)
{
    img_rgb8 img = {malloc((size_t)w * h * 3), w, h};
    for (size_t i = 0; i < (size_t)w * h * 3; i++) {
        seed = seed * 1103515245u + 12345u;
        /* Smooth ramps plus noise, so that both flat and busy areas occur. */
        img.px[i] = (uint8_t)((i / 3 % w) * 255 / w / 2 + (seed >> 25));
    }
    return img;
}

/* Resizes img in full (an exact-size config without a crop) into a new buffer. */
static uint8_t *full_resize(const img_rgb8 *img, uint32_t rw, uint32_t rh)
{
    img_preproc_cfg cfg;
    img_preproc_cfg_default(&cfg);
    cfg.shortest_edge = 0;
    cfg.size_w = cfg.crop_w = rw;
    cfg.size_h = cfg.crop_h = rh;
    cfg.do_center_crop = false;
    uint8_t *px = malloc((size_t)rw * rh * 3);
    float *out = malloc((size_t)rw * rh * 3 * sizeof *out);
    eng_err err = {0};
    CHECK_MSG(img_clip_preprocess(img, &cfg, px, out, &err) == 0, "%s", err.msg);
    free(out);
    return px;
}

/* Cropping computes only the crop's window of the resize; that must equal
 * resizing everything and cropping after, padding included. */
static void check_window_equals_full(const img_rgb8 *img, uint32_t shortest, uint32_t crop)
{
    img_preproc_cfg cfg;
    img_preproc_cfg_default(&cfg);
    cfg.shortest_edge = shortest;
    cfg.crop_h = cfg.crop_w = crop;
    uint32_t rw, rh;
    int64_t top, left;
    img_resize_geometry(img->w, img->h, &cfg, &rw, &rh, &top, &left);
    uint8_t *full = full_resize(img, rw, rh);
    uint8_t *got = malloc((size_t)crop * crop * 3);
    float *pv = malloc((size_t)crop * crop * 3 * sizeof *pv);
    eng_err err = {0};
    CHECK_MSG(img_clip_preprocess(img, &cfg, got, pv, &err) == 0, "%s", err.msg);
    size_t bad = 0;
    for (int64_t y = 0; y < crop; y++)
        for (int64_t x = 0; x < crop; x++)
            for (int c = 0; c < 3; c++) {
                /* transformers pads a short side with ceil(d/2) zeros first. */
                int64_t sy = rh < crop ? y - (int64_t)((crop - rh + 1) / 2) : y + top;
                int64_t sx = rw < crop ? x - (int64_t)((crop - rw + 1) / 2) : x + left;
                int want = sy >= 0 && sy < rh && sx >= 0 && sx < rw
                               ? full[((size_t)sy * rw + (size_t)sx) * 3 + c] : 0;
                bad += got[((size_t)y * crop + (size_t)x) * 3 + c] != want;
            }
    CHECK_MSG(bad == 0, "%ux%u, shortest %u, crop %u: %zu bytes differ", img->w, img->h,
              shortest, crop, bad);
    /* A padded pixel normalises like a zero. */
    if (rw < crop || rh < crop)
        CHECK(pv[0] == (0.0f - cfg.mean[0]) / cfg.std[0]);
    free(full);
    free(got);
    free(pv);
}

TEST(image_preprocess_window_and_padding)
{
    img_rgb8 land = synthetic(640, 480, 1), port = synthetic(301, 517, 2);
    img_rgb8 tiny = synthetic(37, 23, 3), thin = synthetic(300, 2, 4);
    check_window_equals_full(&land, 224, 224);  /* downscale, crop columns */
    check_window_equals_full(&port, 224, 224);  /* downscale, crop rows */
    check_window_equals_full(&tiny, 224, 224);  /* upscale */
    check_window_equals_full(&thin, 224, 224);  /* 300x2 becomes 33600x224 */
    check_window_equals_full(&land, 100, 224);  /* padded on both sides */
    check_window_equals_full(&land, 200, 224);  /* cropped across, padded down */
    check_window_equals_full(&port, 224, 111);  /* odd crop */
    img_rgb8_free(&land);
    img_rgb8_free(&port);
    img_rgb8_free(&tiny);
    img_rgb8_free(&thin);
}

/* Pillow's filters are normalised, so a flat image stays flat at any scale. */
TEST(image_preprocess_flat_stays_flat)
{
    static const uint32_t sizes[][2] = {{1, 1}, {1, 500}, {517, 301}, {4000, 3000}, {224, 224}};
    img_preproc_cfg cfg;
    img_preproc_cfg_default(&cfg);
    uint8_t *crop = malloc(224 * 224 * 3);
    float *pv = malloc(3 * 224 * 224 * sizeof *pv);
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        img_rgb8 img = {malloc((size_t)sizes[s][0] * sizes[s][1] * 3), sizes[s][0], sizes[s][1]};
        for (size_t i = 0; i < (size_t)img.w * img.h; i++)
            memcpy(img.px + 3 * i, "\x0d\xc8\xff", 3);
        eng_err err = {0};
        CHECK_MSG(img_clip_preprocess(&img, &cfg, crop, pv, &err) == 0, "%s", err.msg);
        size_t bad = 0;
        for (size_t i = 0; i < 224 * 224; i++)
            bad += memcmp(crop + 3 * i, "\x0d\xc8\xff", 3) != 0;
        CHECK_MSG(bad == 0, "%ux%u: %zu pixels changed", img.w, img.h, bad);
        img_rgb8_free(&img);
    }
    free(crop);
    free(pv);
}

TEST(image_preprocess_errors)
{
    img_preproc_cfg cfg;
    img_preproc_cfg_default(&cfg);
    uint8_t crop[224 * 224 * 3];
    static float pv[3 * 224 * 224];
    eng_err err = {0};
    img_rgb8 empty = {0};
    CHECK_EQ_INT(img_clip_preprocess(&empty, &cfg, crop, pv, &err), ENG_EINVAL);
    img_rgb8 img = synthetic(30, 20, 5);
    cfg.do_center_crop = false; /* the shortest-edge resize of 30x20 is 336x224 */
    CHECK_EQ_INT(img_clip_preprocess(&img, &cfg, crop, pv, &err), ENG_EUNSUPPORTED);
    cfg.do_center_crop = true;
    cfg.crop_w = 0;
    CHECK_EQ_INT(img_clip_preprocess(&img, &cfg, crop, pv, &err), ENG_EINVAL);
    img_rgb8_free(&img);
}

/* rescale and normalise each switch off as transformers' flags do. */
TEST(image_preprocess_flags)
{
    img_rgb8 img = synthetic(224, 224, 6);
    img_preproc_cfg cfg;
    img_preproc_cfg_default(&cfg);
    uint8_t *crop = malloc(224 * 224 * 3);
    float *pv = malloc(3 * 224 * 224 * sizeof *pv);
    eng_err err = {0};
    cfg.do_normalize = false;
    CHECK_EQ_INT(img_clip_preprocess(&img, &cfg, crop, pv, &err), 0);
    CHECK(pv[224 * 224 + 5] == (float)(crop[5 * 3 + 1] * (1.0 / 255.0)));
    cfg.do_rescale = false;
    CHECK_EQ_INT(img_clip_preprocess(&img, &cfg, crop, pv, &err), 0);
    CHECK(pv[2 * 224 * 224 + 7] == (float)crop[7 * 3 + 2]);
    cfg.do_normalize = true;
    CHECK_EQ_INT(img_clip_preprocess(&img, &cfg, crop, pv, &err), 0);
    CHECK(pv[9] == ((float)crop[9 * 3] - cfg.mean[0]) / cfg.std[0]);
    cfg.do_resize = false; /* 224x224 already: the crop is the image */
    CHECK_EQ_INT(img_clip_preprocess(&img, &cfg, crop, pv, &err), 0);
    CHECK(memcmp(crop, img.px, 224 * 224 * 3) == 0);
    img_rgb8_free(&img);
    free(crop);
    free(pv);
}

/* Worker threads preprocess at once; each result equals the lone run's. */
typedef struct worker_job {
    const img_rgb8 *imgs;
    int n;
    const float *want; /* (n, 3, 224, 224) */
    int mismatches;
} worker_job;

static void *worker(void *arg)
{
    worker_job *j = arg;
    img_preproc_cfg cfg;
    img_preproc_cfg_default(&cfg);
    uint8_t *crop = malloc(224 * 224 * 3);
    float *pv = malloc(3 * 224 * 224 * sizeof *pv);
    for (int round = 0; round < 3; round++)
        for (int i = 0; i < j->n; i++) {
            if (img_clip_preprocess(&j->imgs[i], &cfg, crop, pv, NULL) ||
                memcmp(pv, j->want + (size_t)i * 3 * 224 * 224, 3 * 224 * 224 * sizeof *pv))
                j->mismatches++;
        }
    free(crop);
    free(pv);
    return NULL;
}

TEST(image_preprocess_threads)
{
    enum { N_IMGS = 4, N_THREADS = 4 };
    img_rgb8 imgs[N_IMGS] = {synthetic(640, 480, 7), synthetic(300, 500, 8),
                             synthetic(100, 60, 9), synthetic(1024, 1024, 10)};
    float *want = malloc((size_t)N_IMGS * 3 * 224 * 224 * sizeof *want);
    uint8_t *crop = malloc(224 * 224 * 3);
    img_preproc_cfg cfg;
    img_preproc_cfg_default(&cfg);
    for (int i = 0; i < N_IMGS; i++)
        CHECK_EQ_INT(img_clip_preprocess(&imgs[i], &cfg, crop, want + (size_t)i * 3 * 224 * 224,
                                         NULL), 0);
    pthread_t t[N_THREADS];
    worker_job jobs[N_THREADS];
    for (int i = 0; i < N_THREADS; i++) {
        jobs[i] = (worker_job){imgs, N_IMGS, want, 0};
        pthread_create(&t[i], NULL, worker, &jobs[i]);
    }
    for (int i = 0; i < N_THREADS; i++) {
        pthread_join(t[i], NULL);
        CHECK_EQ_INT(jobs[i].mismatches, 0);
    }
    for (int i = 0; i < N_IMGS; i++)
        img_rgb8_free(&imgs[i]);
    free(want);
    free(crop);
}
