/* The benchmarks' test photo: a deterministic, colourful image encoded as a
 * JPEG in memory.
 *
 * bench_engine times decoding and CLIP preprocessing of it, and gen_jpeg
 * writes it to a file for scripts/bench_http.sh's CLIP requests, so both
 * figures are about the same bytes. The functions are static inline in this
 * header because the Makefile builds every .c file in tests/bench as a
 * program of its own: a shared .c file there would have to have a main(). */
#ifndef BENCH_JPEG_H
#define BENCH_JPEG_H

#include <stdint.h>
#include <stdio.h> /* jpeglib.h uses FILE without including stdio.h */
#include <stdlib.h>

#include <jpeglib.h>

/* Row y of the w x h pattern: red and green gradients across the image, a
 * blue checkerboard of 40-pixel squares, and a little noise on every channel.
 * The noise is there so the JPEG's entropy decoding has about as much work as
 * a photo's (a clean synthetic image compresses to almost nothing and decodes
 * unrealistically fast). row: (w, 3) RGB; seed carries the noise from row to
 * row so the image is the same on every run. */
static inline void bench_pattern_row(uint8_t *row, int w, int h, int y, uint32_t *seed)
{
    for (int x = 0; x < w; x++) {
        int base[3] = {255 * x / (w - 1), 255 * y / (h - 1), ((x / 40 + y / 40) & 1) ? 220 : 40};
        for (int c = 0; c < 3; c++) {
            *seed = *seed * 1664525u + 1013904223u;
            int v = base[c] + (int)(*seed >> 27) - 16; /* noise in [-16, 15] */
            row[3 * x + c] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
        }
    }
}

/* Encodes the w x h pattern (w, h >= 2) as a baseline JPEG of quality 90 with
 * libjpeg's defaults (YCbCr 4:2:0, as cameras and most web images are).
 * *out is malloc'd by libjpeg and owned by the caller, who frees it. libjpeg's
 * default error handler exits the process, which a benchmark can accept:
 * encoding a valid image to memory does not fail. */
static inline void bench_jpeg_pattern(int w, int h, unsigned char **out, unsigned long *len)
{
    struct jpeg_compress_struct ci;
    struct jpeg_error_mgr jerr;
    ci.err = jpeg_std_error(&jerr);
    jpeg_create_compress(&ci);
    *out = NULL, *len = 0;
    jpeg_mem_dest(&ci, out, len);
    ci.image_width = (JDIMENSION)w, ci.image_height = (JDIMENSION)h;
    ci.input_components = 3, ci.in_color_space = JCS_RGB;
    jpeg_set_defaults(&ci);
    jpeg_set_quality(&ci, 90, TRUE);
    jpeg_start_compress(&ci, TRUE);
    uint8_t *row = malloc((size_t)w * 3);
    uint32_t seed = 12345;
    for (int y = 0; y < h; y++) {
        bench_pattern_row(row, w, h, y, &seed);
        JSAMPROW r = row;
        jpeg_write_scanlines(&ci, &r, 1);
    }
    free(row);
    jpeg_finish_compress(&ci);
    jpeg_destroy_compress(&ci);
}

#endif
