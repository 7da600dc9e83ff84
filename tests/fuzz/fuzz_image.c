/* img_decode (models/image.h) on arbitrary bytes under a 4-megapixel limit,
 * then img_clip_preprocess on what decodes. The corpus holds plain PNG and
 * JPEG files; the preprocessing settings are picked by the input's size
 * modulo 4, so that every file stays a valid image:
 *   0: openai/clip-vit-base-patch32 (shortest edge 224, crop 224x224)
 *   1: shortest edge 32, crop 24x20 (tall crop, padding for small images)
 *   2: exact resize 17x31 without a centre crop
 *   3: shortest edge 8192 (the largest a config may give), crop 8x8, no
 *      rescale or normalisation. */
#include "tests/fuzz/fuzz.h"

#include <math.h>

#include "models/image.h"

#define MAX_PIXELS 4000000

static img_preproc_cfg cfgs[4];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    for (int i = 0; i < 4; i++)
        img_preproc_cfg_default(&cfgs[i]);
    cfgs[1].shortest_edge = 32;
    cfgs[1].crop_h = 24;
    cfgs[1].crop_w = 20;
    cfgs[2].shortest_edge = 0;
    cfgs[2].size_h = 17;
    cfgs[2].size_w = 31;
    cfgs[2].crop_h = 17;
    cfgs[2].crop_w = 31;
    cfgs[2].do_center_crop = false;
    cfgs[3].shortest_edge = 8192;
    cfgs[3].crop_h = cfgs[3].crop_w = 8;
    cfgs[3].do_rescale = cfgs[3].do_normalize = false;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    img_limits lim = {.max_bytes = 1u << 20, .max_pixels = MAX_PIXELS};
    img_rgb8 img;
    memset(&img, 0xa5, sizeof img); /* must be zeroed on error */
    eng_err err = {0};
    int rc = img_decode(data, size, &lim, &img, &err);
    if (rc) {
        FUZZ_CHECK(img.px == NULL && img.w == 0 && img.h == 0);
        FUZZ_CHECK(rc == ENG_EFORMAT || rc == ENG_ETOOLONG || rc == ENG_EUNSUPPORTED);
        FUZZ_CHECK(err.code == rc && err.msg[0]);
        return 0;
    }
    FUZZ_CHECK(img.px && img.w && img.h && (uint64_t)img.w * img.h <= MAX_PIXELS);
    const img_preproc_cfg *cfg = &cfgs[size % 4];
    size_t n = (size_t)cfg->crop_h * cfg->crop_w;
    uint8_t *crop = malloc(n * 3);
    float *out = malloc(n * 3 * sizeof *out);
    if (!crop || !out)
        abort();
    rc = img_clip_preprocess(&img, cfg, crop, out, &err);
    if (rc == 0) {
        for (size_t i = 0; i < n * 3; i++)
            FUZZ_CHECK(isfinite(out[i]));
        if (!cfg->do_rescale && !cfg->do_normalize) /* the values are the crop's own */
            for (size_t c = 0; c < 3; c++)
                for (size_t i = 0; i < n; i++)
                    FUZZ_CHECK(out[c * n + i] == (float)crop[i * 3 + c]);
    } else {
        FUZZ_CHECK(rc == ENG_EINVAL); /* an absurd resize of an extreme aspect ratio */
    }
    free(crop);
    free(out);
    img_rgb8_free(&img);
    FUZZ_CHECK(img.px == NULL);
    return 0;
}
