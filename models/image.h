/* Images for the vision models: decoding uploaded PNG/JPEG bytes into 8-bit
 * RGB, and CLIPImageProcessor's preprocessing (resize, centre crop, rescale,
 * normalise) reproduced bit for bit.
 *
 * "Bit for bit" means: for a given RGB image, img_clip_preprocess writes the
 * same uint8 crop and the same float32 pixel_values as transformers'
 * CLIPImageProcessor (PIL path) running on Pillow. Decoding matches Pillow's
 * Image.open(...).convert("RGB") for PNG exactly and for JPEG whenever Pillow
 * uses the same libjpeg-turbo (JPEG decoders differ by a level or two).
 *
 * Nothing here keeps global mutable state: every function may be called from
 * several worker threads at once. */
#ifndef IMG_IMAGE_H
#define IMG_IMAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/error.h"
#include "models/base64.h"

/* ------------------------------------------------------------------------ */
/* Decoding                                                                 */
/* ------------------------------------------------------------------------ */

typedef struct img_rgb8 {
    uint8_t *px; /* (h, w, 3) row-major RGB, malloc'd, owned by the image */
    uint32_t w, h;
} img_rgb8;

/* Limits on untrusted input. A zero field means the default below. */
typedef struct img_limits {
    size_t max_bytes;    /* size of the encoded file */
    uint64_t max_pixels; /* w * h, checked from the header before any pixel is allocated */
    uint64_t max_scan_pixels; /* progressive JPEG: w * h summed over its scans */
} img_limits;

#define IMG_DEFAULT_MAX_BYTES ((size_t)32 << 20)
/* Pillow's Image.MAX_IMAGE_PIXELS: above it Pillow warns of a decompression bomb. */
#define IMG_DEFAULT_MAX_PIXELS ((uint64_t)89478485)
/* Each scan of a progressive JPEG is a pass over the whole image, and takes
 * a few bytes: 16 scans of a 40-megapixel image, ~2 s of CPU. */
#define IMG_DEFAULT_MAX_SCAN_PIXELS ((uint64_t)640000000)

/* Decodes a PNG or JPEG held in memory (told apart by their magic bytes) into
 * 8-bit RGB the way Pillow's convert("RGB") does: grayscale and palette
 * expanded, alpha dropped (not composited), 16-bit RGB(A) and gray+alpha
 * reduced to their high byte, 16-bit gray clamped to 255 (Pillow's I;16 -> RGB),
 * interlaced PNG, CMYK/YCCK JPEG inverted as Adobe writes it (Pillow assumes
 * that of every 4-channel JPEG). EXIF orientation is not applied (transformers
 * does not either).
 *
 * lim may be NULL for the defaults. Errors: a file over max_bytes or a header
 * over max_pixels -> ENG_ETOOLONG (before the pixels are allocated); empty,
 * truncated, corrupt or unknown data -> ENG_EFORMAT; GIF, WebP, BMP, TIFF ->
 * ENG_EUNSUPPORTED; ENG_ENOMEM. On success *out owns a new buffer (free it with
 * img_rgb8_free); on error *out is zeroed. JPEG warnings that Pillow also
 * ignores (extraneous bytes, corrupt Huffman data) are ignored; a JPEG that
 * ends early is an error, as it is for Pillow. */
int img_decode(const uint8_t *data, size_t len, const img_limits *lim, img_rgb8 *out,
               eng_err *err);

/* Frees the pixels and zeroes the image; safe on a zeroed image. */
void img_rgb8_free(img_rgb8 *img);

/* ------------------------------------------------------------------------ */
/* CLIP preprocessing                                                       */
/* ------------------------------------------------------------------------ */

/* What preprocessor_config.json says, with CLIPImageProcessor's defaults. */
typedef struct img_preproc_cfg {
    uint32_t shortest_edge;    /* resize the short side to this, the long side to
                                  int(shortest_edge * long / short); 0 when the
                                  config gives an exact size instead */
    uint32_t size_h, size_w;   /* exact resize target when shortest_edge == 0 */
    uint32_t crop_h, crop_w;   /* the model's input size */
    bool do_resize, do_center_crop, do_rescale, do_normalize, do_convert_rgb;
    double rescale_factor;     /* double, not float: numpy multiplies in float64
                                  by the Python float and only then casts */
    float mean[3], std[3];     /* float32, as numpy casts them before normalising */
} img_preproc_cfg;

/* Fills cfg with openai/clip-vit-base-patch32's settings: shortest edge 224,
 * crop 224x224, bicubic, rescale 1/255, OpenAI CLIP mean/std, every do_* true. */
void img_preproc_cfg_default(img_preproc_cfg *cfg);

/* Reads <dir>/preprocessor_config.json, both the modern form
 * ({"size": {"shortest_edge": 224}, "crop_size": {"height": 224, "width": 224}})
 * and the legacy CLIPFeatureExtractor one ("size": 224, "crop_size": 224);
 * missing keys take img_preproc_cfg_default's values. "size" may also be
 * {"height", "width"} (an exact resize).
 *
 * A missing file is ENG_ENOTFOUND, not a silent fallback: transformers fails
 * there too, and a model whose preprocessing we guessed would answer wrongly
 * without saying so. A caller that wants the OpenAI defaults anyway calls
 * img_preproc_cfg_default itself. A resample other than 3 (bicubic), or
 * do_center_crop false with a resize that does not produce the crop size, is
 * ENG_EUNSUPPORTED; a malformed value is ENG_EFORMAT naming the key. */
int img_preproc_cfg_load(const char *dir, img_preproc_cfg *cfg, eng_err *err);

/* Resizes img with Pillow's antialiased fixed-point bicubic resampler, takes
 * the centre crop (top = (H - crop_h) // 2, left = (W - crop_w) // 2; a side
 * shorter than the crop is zero-padded, centred, as transformers does) into
 * crop, then rescales (x * rescale_factor in double, cast to float) and
 * normalises ((x - mean) / std in float) into out.
 *
 * crop: (crop_h, crop_w, 3) uint8, caller-owned. out: (3, crop_h, crop_w)
 * float32 CHW, caller-owned. Only the pixels that survive the crop are
 * resampled, which gives the same values as resizing everything and cropping
 * (each output pixel depends only on its own coordinates) at a fraction of the
 * cost. Scratch (filter coefficients and one horizontally resampled strip) is
 * malloc'd and freed inside the call: its size depends on the image, and it is
 * small next to the decoded image the caller already holds. Thread-safe.
 * Returns 0, ENG_EINVAL (empty image, zero sizes), ENG_EUNSUPPORTED (see
 * img_preproc_cfg_load) or ENG_ENOMEM. */
int img_clip_preprocess(const img_rgb8 *img, const img_preproc_cfg *cfg, uint8_t *crop,
                        float *out, eng_err *err);

/* The size the image is resized to before the crop (transformers'
 * get_resize_output_image_size), and where the crop starts in it; negative
 * offsets mean padding. Exposed for tests and for logging. */
void img_resize_geometry(uint32_t w, uint32_t h, const img_preproc_cfg *cfg, uint32_t *rw,
                         uint32_t *rh, int64_t *crop_top, int64_t *crop_left);

#endif
