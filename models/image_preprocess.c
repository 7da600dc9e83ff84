/* CLIPImageProcessor's preprocessing, bit-identical to transformers on Pillow.
 *
 * The resampler follows Pillow's src/libImaging/Resample.c (ImagingResample
 * with BICUBIC, no box, no reducing_gap): separable, horizontal pass first
 * into an 8-bit intermediate (rounded and clipped), then the vertical pass.
 * Each output pixel's filter is the bicubic kernel (a = -0.5) stretched by the
 * downscale factor (antialiasing), evaluated in double, normalised to sum 1,
 * then rounded to fixed point with PRECISION_BITS fractional bits. Every
 * expression that produces a double is written in Pillow's order: changing
 * one (a reciprocal instead of a division, a reordered sum) moves a weight by
 * an ulp, which moves a pixel by a level now and then. The build's -std=c11
 * keeps the compiler from contracting them into FMAs.
 *
 * preprocessor_config.json is parsed here too: it is the loader of this
 * module's configuration. */
#include "models/image.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

/* ------------------------------------------------------------------------ */
/* Geometry                                                                 */
/* ------------------------------------------------------------------------ */

void img_resize_geometry(uint32_t w, uint32_t h, const img_preproc_cfg *cfg, uint32_t *rw,
                         uint32_t *rh, int64_t *crop_top, int64_t *crop_left)
{
    *rw = w;
    *rh = h;
    if (cfg->do_resize && cfg->shortest_edge) {
        /* transformers: int(size * long / short), a correctly rounded float
         * division truncated, which is what the C below computes too. */
        uint32_t s = cfg->shortest_edge;
        double long_side = w <= h ? (double)((uint64_t)s * h) / (double)w
                                  : (double)((uint64_t)s * w) / (double)h;
        /* Saturated: past 2^32 the cast is undefined; the caller refuses the size. */
        uint32_t l = long_side < 4294967296.0 ? (uint32_t)long_side : UINT32_MAX;
        *rw = w <= h ? s : l;
        *rh = w <= h ? l : s;
    } else if (cfg->do_resize) {
        *rw = cfg->size_w;
        *rh = cfg->size_h;
    }
    /* Python's floor division, also for an image smaller than the crop. */
    int64_t dy = (int64_t)*rh - cfg->crop_h, dx = (int64_t)*rw - cfg->crop_w;
    *crop_top = dy >= 0 ? dy / 2 : -((-dy + 1) / 2);
    *crop_left = dx >= 0 ? dx / 2 : -((-dx + 1) / 2);
}

/* Which stretch of one axis of the resized image the crop keeps: resized
 * positions [src, src + n) land at crop positions [dst, dst + n). A resized
 * side shorter than the crop is centred with ceil((crop - size) / 2) zeros
 * before it, as transformers' center_crop pads. */
typedef struct axis_span {
    int src, dst, n;
} axis_span;

static axis_span span_of(uint32_t resized, uint32_t crop, int64_t offset)
{
    axis_span s;
    if (resized >= crop) {
        s.src = (int)offset;
        s.dst = 0;
        s.n = (int)crop;
    } else {
        s.src = 0;
        s.dst = (int)((crop - resized + 1) / 2);
        s.n = (int)resized;
    }
    return s;
}

/* ------------------------------------------------------------------------ */
/* Pillow's bicubic resampler                                               */
/* ------------------------------------------------------------------------ */

/* 8 bits for the result and 2 for the overshoot of a kernel with negative
 * lobes, in a 32-bit accumulator. */
#define PRECISION_BITS (32 - 8 - 2)
#define BICUBIC_SUPPORT 2.0

static double bicubic_filter(double x)
{
    const double a = -0.5;
    if (x < 0.0)
        x = -x;
    if (x < 1.0)
        return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
    if (x < 2.0)
        return (((x - 5) * x + 8) * x - 4) * a;
    return 0.0;
}

static uint8_t clip8(int32_t v)
{
    v >>= PRECISION_BITS; /* arithmetic shift, as Pillow relies on */
    return (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
}

/* One axis's filters for the outputs [first, first + n) of a resize from
 * in_size to out_size. */
typedef struct coeffs {
    int ksize;      /* taps reserved per output */
    int *bounds;    /* (n, 2) first input index, number of taps used */
    int32_t *k;     /* (n, ksize) weights, fixed point with PRECISION_BITS */
} coeffs;

static void coeffs_free(coeffs *c)
{
    free(c->bounds);
    free(c->k);
}

/* Pillow's precompute_coeffs + normalize_coeffs_8bpc, for a window of outputs
 * (each output's filter depends on its own index only). */
static int coeffs_compute(int in_size, int out_size, int first, int n, coeffs *c)
{
    /* Pillow's box is float: (double)(in1 - in0) with in0 = 0. */
    double scale = (double)(float)in_size / out_size;
    double filterscale = scale < 1.0 ? 1.0 : scale;
    double support = BICUBIC_SUPPORT * filterscale;
    c->ksize = (int)ceil(support) * 2 + 1;
    c->bounds = malloc((size_t)n * 2 * sizeof *c->bounds);
    c->k = malloc((size_t)n * c->ksize * sizeof *c->k);
    double *w = malloc((size_t)c->ksize * sizeof *w);
    if (!c->bounds || !c->k || !w) {
        free(w);
        return ENG_ENOMEM;
    }
    for (int i = 0; i < n; i++) {
        double center = (first + i + 0.5) * scale;
        double ww = 0.0, ss = 1.0 / filterscale;
        int xmin = (int)(center - support + 0.5);
        if (xmin < 0)
            xmin = 0;
        int xmax = (int)(center + support + 0.5);
        if (xmax > in_size)
            xmax = in_size;
        xmax -= xmin;
        for (int x = 0; x < xmax; x++) {
            w[x] = bicubic_filter((x + xmin - center + 0.5) * ss);
            ww += w[x];
        }
        int32_t *k = c->k + (size_t)i * c->ksize;
        for (int x = 0; x < c->ksize; x++) {
            double v = x < xmax ? (ww != 0.0 ? w[x] / ww : w[x]) : 0.0;
            k[x] = (int32_t)(v < 0 ? -0.5 + v * (1 << PRECISION_BITS)
                                   : 0.5 + v * (1 << PRECISION_BITS));
        }
        c->bounds[2 * i] = xmin;
        c->bounds[2 * i + 1] = xmax;
    }
    free(w);
    return 0;
}

/* Horizontal pass: rows of src (stride bytes apart, RGB) into dst (rows, n, 3). */
static void resample_h(const uint8_t *src, size_t stride, int rows, const coeffs *c, int n,
                       uint8_t *dst)
{
    for (int y = 0; y < rows; y++) {
        const uint8_t *row = src + (size_t)y * stride;
        for (int xx = 0; xx < n; xx++, dst += 3) {
            const int32_t *k = c->k + (size_t)xx * c->ksize;
            const uint8_t *p = row + (size_t)c->bounds[2 * xx] * 3;
            int32_t s0 = 1 << (PRECISION_BITS - 1), s1 = s0, s2 = s0;
            for (int x = 0; x < c->bounds[2 * xx + 1]; x++, p += 3) {
                s0 += p[0] * k[x];
                s1 += p[1] * k[x];
                s2 += p[2] * k[x];
            }
            dst[0] = clip8(s0);
            dst[1] = clip8(s1);
            dst[2] = clip8(s2);
        }
    }
}

/* Vertical pass: output rows yy of c from src rows (src holds input row
 * row0 at its top), width bytes each, into dst rows dst_stride apart. acc is
 * (width) scratch. Summing row by row instead of Pillow's column by column
 * adds the same integers, so the result is the same, and the inner loop runs
 * over contiguous bytes (restrict lets -O3 or clang vectorise it). */
static void resample_v(const uint8_t *restrict src, size_t stride, int row0, const coeffs *c,
                       int n, size_t width, uint8_t *restrict dst, size_t dst_stride,
                       int32_t *restrict acc)
{
    for (int yy = 0; yy < n; yy++) {
        const int32_t *k = c->k + (size_t)yy * c->ksize;
        const uint8_t *rows = src + (size_t)(c->bounds[2 * yy] - row0) * stride;
        for (size_t i = 0; i < width; i++)
            acc[i] = 1 << (PRECISION_BITS - 1);
        for (int y = 0; y < c->bounds[2 * yy + 1]; y++) {
            const uint8_t *r = rows + (size_t)y * stride;
            int32_t ky = k[y];
            for (size_t i = 0; i < width; i++)
                acc[i] += r[i] * ky;
        }
        uint8_t *d = dst + (size_t)yy * dst_stride;
        for (size_t i = 0; i < width; i++)
            d[i] = clip8(acc[i]);
    }
}

/* Everything one resize needs besides its input and output. */
typedef struct resize_scratch {
    coeffs ch, cv;
    uint8_t *strip; /* (rows, sx.n, 3) the horizontally resampled rows */
    int32_t *acc;   /* (sx.n * 3) vertical accumulator */
} resize_scratch;

static void scratch_free(resize_scratch *s)
{
    coeffs_free(&s->ch);
    coeffs_free(&s->cv);
    free(s->strip);
    free(s->acc);
}

/* Resizes img to rw x rh, computing only the crop's window (sx, sy), into
 * crop (crop_w wide). Like Pillow, an axis whose size does not change is not
 * resampled (its filter would be the identity anyway). */
static int resize_window(const img_rgb8 *img, uint32_t rw, uint32_t rh, axis_span sx,
                         axis_span sy, uint8_t *crop, uint32_t crop_w)
{
    resize_scratch s = {0};
    int rc = ENG_ENOMEM;
    int need_h = rw != img->w, need_v = rh != img->h;
    size_t in_stride = (size_t)img->w * 3, dst_stride = (size_t)crop_w * 3;
    uint8_t *dst = crop + (size_t)sy.dst * dst_stride + (size_t)sx.dst * 3;
    int y0 = sy.src, y1 = sy.src + sy.n; /* input rows the vertical pass reads */
    if (need_v) {
        if (coeffs_compute((int)img->h, (int)rh, sy.src, sy.n, &s.cv))
            goto out;
        y0 = s.cv.bounds[0];
        y1 = s.cv.bounds[2 * (sy.n - 1)] + s.cv.bounds[2 * (sy.n - 1) + 1];
    }
    const uint8_t *src = img->px + (size_t)sx.src * 3;
    size_t src_stride = in_stride;
    int row0 = 0;
    if (need_h) {
        if (coeffs_compute((int)img->w, (int)rw, sx.src, sx.n, &s.ch) ||
            !(s.strip = malloc((size_t)(y1 - y0) * sx.n * 3)))
            goto out;
        resample_h(img->px + (size_t)y0 * in_stride, in_stride, y1 - y0, &s.ch, sx.n, s.strip);
        src = s.strip;
        src_stride = (size_t)sx.n * 3;
        row0 = y0;
    }
    if (need_v) {
        if (!(s.acc = malloc((size_t)sx.n * 3 * sizeof *s.acc)))
            goto out;
        resample_v(src, src_stride, row0, &s.cv, sy.n, (size_t)sx.n * 3, dst, dst_stride, s.acc);
    } else {
        for (int y = 0; y < sy.n; y++)
            memcpy(dst + (size_t)y * dst_stride, src + (size_t)(sy.src + y - row0) * src_stride,
                   (size_t)sx.n * 3);
    }
    rc = 0;
out:
    scratch_free(&s);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Rescale, normalise                                                       */
/* ------------------------------------------------------------------------ */

/* transformers: x.astype(float64) * rescale_factor, cast to float32, then
 * (x - mean) / std with float32 mean and std. A pixel has 256 values, so each
 * channel's results are tabulated once. */
static void normalise(const uint8_t *crop, const img_preproc_cfg *cfg, float *out)
{
    float lut[3][256];
    for (int c = 0; c < 3; c++)
        for (int v = 0; v < 256; v++) {
            float f = cfg->do_rescale ? (float)((double)v * cfg->rescale_factor) : (float)v;
            lut[c][v] = cfg->do_normalize ? (f - cfg->mean[c]) / cfg->std[c] : f;
        }
    size_t plane = (size_t)cfg->crop_h * cfg->crop_w;
    for (size_t i = 0; i < plane; i++)
        for (int c = 0; c < 3; c++)
            out[c * plane + i] = lut[c][crop[3 * i + c]];
}

int img_clip_preprocess(const img_rgb8 *img, const img_preproc_cfg *cfg, uint8_t *crop,
                        float *out, eng_err *err)
{
    if (!img->px || !img->w || !img->h || img->w > (1u << 24) || img->h > (1u << 24))
        return eng_err_set(err, ENG_EINVAL, "image of %ux%u pixels cannot be preprocessed",
                           img->w, img->h);
    if (!cfg->crop_w || !cfg->crop_h || (cfg->do_resize && !cfg->shortest_edge &&
                                         (!cfg->size_w || !cfg->size_h)))
        return eng_err_set(err, ENG_EINVAL, "preprocessing config has a zero size");
    uint32_t rw, rh;
    int64_t top, left;
    img_resize_geometry(img->w, img->h, cfg, &rw, &rh, &top, &left);
    if (!cfg->do_center_crop && (rw != cfg->crop_w || rh != cfg->crop_h))
        return eng_err_set(err, ENG_EUNSUPPORTED, "without a centre crop the image becomes "
                           "%ux%u, not the model's %ux%u", rw, rh, cfg->crop_w, cfg->crop_h);
    if (rw > INT_MAX / 4 || rh > INT_MAX / 4)
        return eng_err_set(err, ENG_EINVAL, "a %ux%u image resizes to an absurd %ux%u",
                           img->w, img->h, rw, rh);
    axis_span sx = span_of(rw, cfg->crop_w, left), sy = span_of(rh, cfg->crop_h, top);
    if (rw < cfg->crop_w || rh < cfg->crop_h)
        memset(crop, 0, (size_t)cfg->crop_w * cfg->crop_h * 3);
    if (resize_window(img, rw, rh, sx, sy, crop, cfg->crop_w))
        return eng_err_set(err, ENG_ENOMEM, "out of memory resizing a %ux%u image", img->w,
                           img->h);
    normalise(crop, cfg, out);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* preprocessor_config.json                                                 */
/* ------------------------------------------------------------------------ */

/* transformers' OPENAI_CLIP_MEAN / OPENAI_CLIP_STD. */
static const float clip_mean[3] = {0.48145466f, 0.4578275f, 0.40821073f};
static const float clip_std[3] = {0.26862954f, 0.26130258f, 0.27577711f};

void img_preproc_cfg_default(img_preproc_cfg *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->shortest_edge = 224;
    cfg->crop_h = cfg->crop_w = 224;
    cfg->do_resize = cfg->do_center_crop = cfg->do_rescale = true;
    cfg->do_normalize = cfg->do_convert_rgb = true;
    cfg->rescale_factor = 1.0 / 255.0;
    memcpy(cfg->mean, clip_mean, sizeof clip_mean);
    memcpy(cfg->std, clip_std, sizeof clip_std);
}

/* Largest edge a config may ask for: far beyond any vision model, small
 * enough that sizes stay well inside int arithmetic. */
#define MAX_EDGE 8192

static int get_bool(json_t *root, const char *key, bool *v, const char *path, eng_err *err)
{
    json_t *j = json_object_get(root, key);
    if (!j || json_is_null(j))
        return 0;
    if (!json_is_boolean(j))
        return eng_err_set(err, ENG_EFORMAT, "%s: \"%s\" must be true or false", path, key);
    *v = json_is_true(j);
    return 0;
}

static int edge_value(json_t *j, const char *key, uint32_t *v, const char *path, eng_err *err)
{
    if (!json_is_integer(j) || json_integer_value(j) < 1 || json_integer_value(j) > MAX_EDGE)
        return eng_err_set(err, ENG_EFORMAT, "%s: \"%s\" needs whole numbers of pixels from 1 "
                           "to %d", path, key, MAX_EDGE);
    *v = (uint32_t)json_integer_value(j);
    return 0;
}

/* A size as transformers' get_size_dict reads it: an int n (the shortest
 * edge when shortest is non-NULL, else n x n), {"shortest_edge": n},
 * {"height": h, "width": w} or [h, w]. Absent keys leave the values alone. */
static int get_size(json_t *root, const char *key, uint32_t *shortest, uint32_t *h,
                    uint32_t *w, const char *path, eng_err *err)
{
    json_t *j = json_object_get(root, key);
    if (!j || json_is_null(j))
        return 0;
    json_t *se = json_object_get(j, "shortest_edge");
    json_t *jh = json_is_array(j) ? json_array_get(j, 0) : json_object_get(j, "height");
    json_t *jw = json_is_array(j) ? json_array_get(j, 1) : json_object_get(j, "width");
    if (json_is_integer(j) || (se && shortest)) {
        uint32_t n;
        int rc = edge_value(json_is_integer(j) ? j : se, key, &n, path, err);
        if (rc)
            return rc;
        if (shortest)
            *shortest = n;
        else
            *h = *w = n;
        return 0;
    }
    if (!jh || !jw || (json_is_array(j) && json_array_size(j) != 2))
        return eng_err_set(err, ENG_EFORMAT, "%s: \"%s\" must be a number, %s{\"height\", "
                           "\"width\"} or [height, width]", path, key,
                           shortest ? "{\"shortest_edge\"}, " : "");
    int rc = edge_value(jh, key, h, path, err);
    if (!rc)
        rc = edge_value(jw, key, w, path, err);
    if (!rc && shortest)
        *shortest = 0;
    return rc;
}

/* image_mean / image_std: three numbers, or one for every channel. */
static int get_triple(json_t *root, const char *key, float v[3], const char *path,
                      eng_err *err)
{
    json_t *j = json_object_get(root, key);
    if (!j || json_is_null(j))
        return 0;
    for (int c = 0; c < 3; c++) {
        json_t *e = json_is_array(j) ? json_array_get(j, (size_t)c) : j;
        if (!json_is_number(e) || (json_is_array(j) && json_array_size(j) != 3))
            return eng_err_set(err, ENG_EFORMAT, "%s: \"%s\" must be a number or a list of 3 "
                               "numbers", path, key);
        v[c] = (float)json_number_value(e);
    }
    return 0;
}

/* The numeric settings and what predictd cannot do. */
static int check_numbers(json_t *root, img_preproc_cfg *cfg, const char *path, eng_err *err)
{
    json_t *rf = json_object_get(root, "rescale_factor");
    if (rf && !json_is_null(rf)) {
        if (!json_is_number(rf) || !isfinite(json_number_value(rf)))
            return eng_err_set(err, ENG_EFORMAT, "%s: \"rescale_factor\" must be a number", path);
        cfg->rescale_factor = json_number_value(rf);
    }
    for (int c = 0; c < 3; c++)
        if (!(cfg->std[c] != 0.0f) || !isfinite(cfg->std[c]) || !isfinite(cfg->mean[c]))
            return eng_err_set(err, ENG_EFORMAT, "%s: \"image_std\" must be non-zero and "
                               "\"image_mean\" finite", path);
    json_t *rs = json_object_get(root, "resample");
    if (cfg->do_resize && rs && !json_is_null(rs) &&
        (!json_is_integer(rs) || json_integer_value(rs) != 3))
        return eng_err_set(err, ENG_EUNSUPPORTED, "%s: only \"resample\": 3 (bicubic) is "
                           "implemented", path);
    if (!cfg->do_center_crop) {
        /* The output is then the resized image itself, so it has a fixed size
         * only when the resize gives one. */
        if (!cfg->do_resize || cfg->shortest_edge)
            return eng_err_set(err, ENG_EUNSUPPORTED, "%s: \"do_center_crop\": false needs "
                               "\"size\" as {\"height\", \"width\"}", path);
        cfg->crop_h = cfg->size_h;
        cfg->crop_w = cfg->size_w;
    }
    return 0;
}

static int parse_cfg(json_t *root, img_preproc_cfg *cfg, const char *path, eng_err *err)
{
    if (!json_is_object(root))
        return eng_err_set(err, ENG_EFORMAT, "%s: not a JSON object", path);
    int rc = get_size(root, "size", &cfg->shortest_edge, &cfg->size_h, &cfg->size_w, path, err);
    if (!rc)
        rc = get_size(root, "crop_size", NULL, &cfg->crop_h, &cfg->crop_w, path, err);
    if (!rc)
        rc = get_bool(root, "do_resize", &cfg->do_resize, path, err);
    if (!rc)
        rc = get_bool(root, "do_center_crop", &cfg->do_center_crop, path, err);
    if (!rc)
        rc = get_bool(root, "do_rescale", &cfg->do_rescale, path, err);
    if (!rc)
        rc = get_bool(root, "do_normalize", &cfg->do_normalize, path, err);
    if (!rc)
        rc = get_bool(root, "do_convert_rgb", &cfg->do_convert_rgb, path, err);
    if (!rc)
        rc = get_triple(root, "image_mean", cfg->mean, path, err);
    if (!rc)
        rc = get_triple(root, "image_std", cfg->std, path, err);
    if (!rc)
        rc = check_numbers(root, cfg, path, err);
    return rc;
}

int img_preproc_cfg_load(const char *dir, img_preproc_cfg *cfg, eng_err *err)
{
    img_preproc_cfg_default(cfg);
    char path[4096];
    if (snprintf(path, sizeof path, "%s/preprocessor_config.json", dir) >= (int)sizeof path)
        return eng_err_set(err, ENG_EINVAL, "model path too long: %s", dir);
    FILE *f = fopen(path, "rb");
    if (!f)
        return eng_err_set(err, ENG_ENOTFOUND, "%s not found: an image model needs its "
                           "preprocessing settings", path);
    json_error_t jerr;
    json_t *root = json_loadf(f, 0, &jerr);
    fclose(f);
    if (!root)
        return eng_err_set(err, ENG_EFORMAT, "%s:%d: %s", path, jerr.line, jerr.text);
    int rc = parse_cfg(root, cfg, path, err);
    json_decref(root);
    return rc;
}
