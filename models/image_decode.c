/* PNG and JPEG decoding into 8-bit RGB, following Pillow's convert("RGB").
 *
 * This is the one file that includes <png.h> and <jpeglib.h>. Both libraries
 * report errors by calling a handler that must not return; ours longjmp back
 * to a setjmp placed in a small function of its own (png_run, jpeg_run) whose
 * locals never change after the setjmp, so that everything the cleanup needs
 * lives in a context struct owned by the caller and survives the jump. */
#include "models/image.h"

#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>
#include <jerror.h>
#include <png.h>

void img_rgb8_free(img_rgb8 *img)
{
    if (!img)
        return;
    free(img->px);
    memset(img, 0, sizeof *img);
}

/* Checks the header's dimensions against the pixel limit and allocates the
 * output, so that a decompression bomb is refused before it costs memory. */
static int rgb_alloc(img_rgb8 *out, uint32_t w, uint32_t h, uint64_t max_pixels,
                     const char *fmt, eng_err *err)
{
    if (w == 0 || h == 0)
        return eng_err_set(err, ENG_EFORMAT, "%s header gives an empty image (%ux%u)", fmt, w, h);
    if ((uint64_t)w * h > max_pixels)
        return eng_err_set(err, ENG_ETOOLONG, "%s image is %ux%u = %llu pixels, over the limit "
                           "of %llu", fmt, w, h, (unsigned long long)w * h,
                           (unsigned long long)max_pixels);
    out->px = malloc((size_t)w * h * 3);
    if (!out->px)
        return eng_err_set(err, ENG_ENOMEM, "out of memory for a %ux%u %s image", w, h, fmt);
    out->w = w;
    out->h = h;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* PNG                                                                      */
/* ------------------------------------------------------------------------ */

typedef struct png_ctx {
    png_structp png;
    png_infop info;
    const uint8_t *data;
    size_t len, pos;
    uint64_t max_pixels;
    img_rgb8 *out;
    png_uint_32 w, h;
    int bit_depth, color_type; /* as the file has them */
    int channels;              /* per raw row pixel, alpha stripped */
    uint8_t *raw;     /* (rows, rowbytes) one row, or every row when interlaced */
    png_bytep *rows;  /* (h) row pointers into raw, interlaced images only */
    png_color palette[256]; /* PLTE, zero past its end as in Pillow */
    eng_err *err;
    int rc;           /* set before a longjmp that is not a libpng error */
    char msg[256];
} png_ctx;

static void png_read_cb(png_structp png, png_bytep dst, size_t n)
{
    png_ctx *c = png_get_io_ptr(png);
    if (n > c->len - c->pos)
        png_error(png, "file ends early (truncated PNG)");
    memcpy(dst, c->data + c->pos, n);
    c->pos += n;
}

static void png_error_cb(png_structp png, png_const_charp msg)
{
    png_ctx *c = png_get_error_ptr(png);
    snprintf(c->msg, sizeof c->msg, "%s", msg);
    png_longjmp(png, 1);
}

static void png_warning_cb(png_structp png, png_const_charp msg)
{
    (void)png;
    (void)msg; /* ancillary-chunk trouble that Pillow ignores too */
}

/* Converts one row of raw samples (1-7 bit depths unpacked to a byte each,
 * 16-bit gray big-endian, alpha stripped) to RGB as Pillow's modes and
 * convert() do:
 * 16-bit colour keeps its high byte (rawmodes RGB;16B, RGBA;16B, LA;16B),
 * 16-bit gray becomes I;16 and converts to RGB by clamping at 255, and 1/2/4-bit
 * gray is scaled to 0..255 (modes 1, L;2, L;4). */
static void png_row_to_rgb(const png_ctx *c, const uint8_t *raw, uint8_t *rgb)
{
    if (c->color_type == PNG_COLOR_TYPE_PALETTE) {
        for (png_uint_32 x = 0; x < c->w; x++) {
            const png_color *p = &c->palette[raw[x]];
            rgb[3 * x + 0] = p->red;
            rgb[3 * x + 1] = p->green;
            rgb[3 * x + 2] = p->blue;
        }
        return;
    }
    if (c->color_type == PNG_COLOR_TYPE_GRAY && c->bit_depth == 16) {
        for (png_uint_32 x = 0; x < c->w; x++) {
            uint8_t v = raw[2 * x] ? 255 : raw[2 * x + 1];
            rgb[3 * x + 0] = rgb[3 * x + 1] = rgb[3 * x + 2] = v;
        }
        return;
    }
    /* One byte a sample: 16-bit colour and gray+alpha come stripped to
     * their high byte. */
    int gray = !(c->color_type & PNG_COLOR_MASK_COLOR);
    int scale = c->bit_depth < 8 ? 255 / ((1 << c->bit_depth) - 1) : 1;
    for (png_uint_32 x = 0; x < c->w; x++)
        for (int j = 0; j < 3; j++)
            rgb[3 * x + j] = (uint8_t)(raw[(size_t)x * c->channels + (gray ? 0 : j)] * scale);
}

/* Reads the header, refuses oversized images, and sets up the transforms. */
static void png_setup(png_ctx *c)
{
    png_read_info(c->png, c->info);
    int interlace;
    png_get_IHDR(c->png, c->info, &c->w, &c->h, &c->bit_depth, &c->color_type, &interlace,
                 NULL, NULL);
    c->rc = rgb_alloc(c->out, c->w, c->h, c->max_pixels, "PNG", c->err);
    if (c->rc)
        png_longjmp(c->png, 1);
    if (c->color_type == PNG_COLOR_TYPE_PALETTE) {
        png_colorp plte;
        int n = 0;
        if (png_get_PLTE(c->png, c->info, &plte, &n) == 0)
            png_error(c->png, "palette image without a PLTE chunk");
        memcpy(c->palette, plte, (size_t)(n > 256 ? 256 : n) * sizeof *plte);
    }
    if (c->bit_depth < 8)
        png_set_packing(c->png);
    /* What png_row_to_rgb would drop, libpng drops first: the raw rows an
     * interlaced image holds at once are then at most 3 bytes a pixel, not
     * 8 (16-bit RGBA). 16-bit gray keeps both bytes (it is clamped). */
    if (c->bit_depth == 16 && c->color_type != PNG_COLOR_TYPE_GRAY)
        png_set_strip_16(c->png);
    if (c->color_type & PNG_COLOR_MASK_ALPHA)
        png_set_strip_alpha(c->png);
    png_set_interlace_handling(c->png);
    png_read_update_info(c->png, c->info);
    c->channels = png_get_channels(c->png, c->info);
}

static int png_run(png_ctx *c)
{
    if (setjmp(png_jmpbuf(c->png)))
        return c->rc ? c->rc : eng_err_set(c->err, ENG_EFORMAT, "bad PNG: %s", c->msg);
    png_setup(c);
    size_t rowbytes = png_get_rowbytes(c->png, c->info);
    int interlaced = png_get_interlace_type(c->png, c->info) != PNG_INTERLACE_NONE;
    /* An interlaced image arrives in seven passes over the whole frame, so
     * only those need every raw row at once. */
    size_t n_rows = interlaced ? c->h : 1;
    c->raw = malloc(rowbytes * n_rows);
    c->rows = interlaced ? malloc(c->h * sizeof *c->rows) : NULL;
    if (!c->raw || (interlaced && !c->rows)) {
        c->rc = eng_err_set(c->err, ENG_ENOMEM, "out of memory for a %ux%u PNG", c->w, c->h);
        return c->rc;
    }
    uint8_t *dst = c->out->px;
    if (!interlaced) {
        for (png_uint_32 y = 0; y < c->h; y++) {
            png_read_row(c->png, c->raw, NULL);
            png_row_to_rgb(c, c->raw, dst + (size_t)y * c->w * 3);
        }
        return 0;
    }
    for (png_uint_32 y = 0; y < c->h; y++)
        c->rows[y] = c->raw + y * rowbytes;
    png_read_image(c->png, c->rows);
    for (png_uint_32 y = 0; y < c->h; y++)
        png_row_to_rgb(c, c->rows[y], dst + (size_t)y * c->w * 3);
    return 0;
}

/* Decoding stops after the last row: like Pillow, a file whose pixels are all
 * there but whose IEND is missing still decodes. */
static int png_decode(const uint8_t *data, size_t len, uint64_t max_pixels, img_rgb8 *out,
                      eng_err *err)
{
    png_ctx c = {.data = data, .len = len, .max_pixels = max_pixels, .out = out, .err = err};
    c.png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &c, png_error_cb, png_warning_cb);
    if (c.png)
        c.info = png_create_info_struct(c.png);
    if (!c.png || !c.info) {
        png_destroy_read_struct(c.png ? &c.png : NULL, NULL, NULL);
        return eng_err_set(err, ENG_ENOMEM, "out of memory starting the PNG decoder");
    }
    png_set_read_fn(c.png, &c, png_read_cb);
    int rc = png_run(&c);
    png_destroy_read_struct(&c.png, &c.info, NULL);
    free(c.raw);
    free(c.rows);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* JPEG                                                                     */
/* ------------------------------------------------------------------------ */

/* Progressive JPEGs may hold any number of scans, each a full pass over the
 * coefficients; real ones have about ten. A few bytes make a scan, so a
 * small file could cost minutes of CPU (libjpeg-turbo's own advice against
 * such files): the scans allowed shrink as the image grows, their pixels
 * summed bounded by img_limits.max_scan_pixels, but never fewer than
 * JPEG_MIN_SCANS (a budget below that many full scans is the pixel limit's
 * business) nor more than JPEG_MAX_SCANS. */
#define JPEG_MIN_SCANS 16
#define JPEG_MAX_SCANS 1000

typedef struct jpeg_ctx {
    struct jpeg_decompress_struct cinfo;
    struct jpeg_error_mgr jerr;
    struct jpeg_progress_mgr progress;
    jmp_buf jmp;  /* jpeg_run's while it runs, jpeg_decode's before */
    const uint8_t *data;
    size_t len;
    uint64_t max_pixels;
    img_rgb8 *out;
    uint8_t *row; /* (w, 4) one CMYK row */
    eng_err *err;
    int rc;       /* set before a longjmp that is not a libjpeg error */
    uint64_t max_scan_pixels;
    int max_scans; /* from max_scan_pixels once the size is known */
    bool rows_done;
    char msg[JMSG_LENGTH_MAX];
} jpeg_ctx;

static void jpeg_error_exit_cb(j_common_ptr cinfo)
{
    jpeg_ctx *c = (jpeg_ctx *)cinfo->client_data;
    (*cinfo->err->format_message)(cinfo, c->msg);
    longjmp(c->jmp, 1);
}

/* Warnings are ignored, as Pillow ignores them, except running out of data
 * before the last row: libjpeg would pad the image with gray, Pillow reports
 * a truncated file. After the last row Pillow accepts the end of the data. */
static void jpeg_emit_message_cb(j_common_ptr cinfo, int level)
{
    jpeg_ctx *c = (jpeg_ctx *)cinfo->client_data;
    if (level < 0 && cinfo->err->msg_code == JWRN_JPEG_EOF && !c->rows_done) {
        snprintf(c->msg, sizeof c->msg, "file ends early (truncated JPEG)");
        longjmp(c->jmp, 1);
    }
}

static void jpeg_progress_cb(j_common_ptr cinfo)
{
    jpeg_ctx *c = (jpeg_ctx *)cinfo->client_data;
    if (c->cinfo.input_scan_number > c->max_scans) {
        snprintf(c->msg, sizeof c->msg, "more than %d scans for a %ux%u image", c->max_scans,
                 c->cinfo.image_width, c->cinfo.image_height);
        longjmp(c->jmp, 1);
    }
}

/* Pillow reads every 4-channel JPEG with rawmode CMYK;I (Adobe's inverted
 * CMYK: all four bytes complemented) and converts CMYK to RGB as
 * R = (255 - K) - round(C * (255 - K) / 255) with its MULDIV255 rounding. */
static void cmyk_row_to_rgb(const uint8_t *cmyk, uint8_t *rgb, uint32_t w)
{
    for (uint32_t x = 0; x < w; x++, cmyk += 4, rgb += 3) {
        int nk = cmyk[3]; /* 255 - (255 - k) */
        for (int j = 0; j < 3; j++) {
            int t = (255 - cmyk[j]) * nk + 128;
            rgb[j] = (uint8_t)(nk - (((t >> 8) + t) >> 8));
        }
    }
}

static int jpeg_run(jpeg_ctx *c)
{
    if (setjmp(c->jmp))
        return c->rc ? c->rc : eng_err_set(c->err, ENG_EFORMAT, "bad JPEG: %s", c->msg);
    struct jpeg_decompress_struct *ci = &c->cinfo;
    c->progress.progress_monitor = jpeg_progress_cb;
    ci->progress = &c->progress;
    jpeg_mem_src(ci, c->data, (unsigned long)c->len);
    jpeg_read_header(ci, TRUE);
    uint64_t pixels = (uint64_t)ci->image_width * ci->image_height;
    uint64_t scans = pixels ? c->max_scan_pixels / pixels : JPEG_MAX_SCANS;
    c->max_scans = (int)(scans < JPEG_MIN_SCANS ? JPEG_MIN_SCANS
                         : scans > JPEG_MAX_SCANS ? JPEG_MAX_SCANS : scans);
    int cmyk = ci->num_components == 4;
    /* Gray and YCbCr/RGB files come out as RGB (gray replicated, as Pillow's
     * L -> RGB); CMYK and YCCK as CMYK, converted below. Pillow leaves the
     * DCT method and fancy upsampling at libjpeg's defaults, and so do we. */
    ci->out_color_space = cmyk ? JCS_CMYK : JCS_RGB;
    c->rc = rgb_alloc(c->out, ci->image_width, ci->image_height, c->max_pixels, "JPEG", c->err);
    if (c->rc)
        return c->rc;
    if (cmyk && !(c->row = malloc((size_t)ci->image_width * 4))) {
        c->rc = eng_err_set(c->err, ENG_ENOMEM, "out of memory for a JPEG row");
        return c->rc;
    }
    jpeg_start_decompress(ci);
    if (ci->output_width != c->out->w || ci->output_height != c->out->h ||
        ci->output_components != (cmyk ? 4 : 3))
        return eng_err_set(c->err, ENG_EFORMAT, "JPEG decoder produced an unexpected layout");
    while (ci->output_scanline < ci->output_height) {
        uint8_t *dst = c->out->px + (size_t)ci->output_scanline * c->out->w * 3;
        JSAMPROW row = cmyk ? c->row : dst;
        if (jpeg_read_scanlines(ci, &row, 1) != 1)
            return eng_err_set(c->err, ENG_EFORMAT, "bad JPEG: decoder stalled");
        if (cmyk)
            cmyk_row_to_rgb(c->row, dst, c->out->w);
    }
    /* Like Pillow, read on to EOI, so that a broken marker after the scans
     * is an error, but let the data end there. */
    c->rows_done = true;
    jpeg_finish_decompress(ci);
    return 0;
}

static int jpeg_decode(const uint8_t *data, size_t len, uint64_t max_pixels,
                       uint64_t max_scan_pixels, img_rgb8 *out, eng_err *err)
{
    jpeg_ctx *c = calloc(1, sizeof *c);
    if (!c)
        return eng_err_set(err, ENG_ENOMEM, "out of memory starting the JPEG decoder");
    c->data = data;
    c->len = len;
    c->max_pixels = max_pixels;
    c->max_scan_pixels = max_scan_pixels;
    c->max_scans = JPEG_MAX_SCANS; /* until the header gives the size */
    c->out = out;
    c->err = err;
    c->cinfo.err = jpeg_std_error(&c->jerr);
    c->jerr.error_exit = jpeg_error_exit_cb;
    c->jerr.emit_message = jpeg_emit_message_cb;
    c->cinfo.client_data = c;
    int rc;
    if (setjmp(c->jmp)) {
        /* jpeg_create_decompress itself failed (out of memory). */
        rc = eng_err_set(err, ENG_ENOMEM, "cannot start the JPEG decoder: %s", c->msg);
    } else {
        jpeg_create_decompress(&c->cinfo);
        rc = jpeg_run(c);
    }
    jpeg_destroy_decompress(&c->cinfo);
    free(c->row);
    free(c);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Format sniffing                                                          */
/* ------------------------------------------------------------------------ */

static const struct {
    const char *magic;
    size_t off, len;
    const char *name;
} unsupported_formats[] = {
    {"GIF8", 0, 4, "GIF"},
    {"WEBP", 8, 4, "WebP"},
    {"BM", 0, 2, "BMP"},
    {"II*\0", 0, 4, "TIFF"},
    {"MM\0*", 0, 4, "TIFF"},
};

static int unknown_format(const uint8_t *data, size_t len, eng_err *err)
{
    for (size_t i = 0; i < sizeof unsupported_formats / sizeof unsupported_formats[0]; i++) {
        size_t off = unsupported_formats[i].off, n = unsupported_formats[i].len;
        if (len >= off + n && memcmp(data + off, unsupported_formats[i].magic, n) == 0)
            return eng_err_set(err, ENG_EUNSUPPORTED, "%s images are not supported (send PNG "
                               "or JPEG)", unsupported_formats[i].name);
    }
    return eng_err_set(err, ENG_EFORMAT, "not a PNG or JPEG image (unrecognised first bytes)");
}

int img_decode(const uint8_t *data, size_t len, const img_limits *lim, img_rgb8 *out,
               eng_err *err)
{
    static const uint8_t png_magic[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    size_t max_bytes = lim && lim->max_bytes ? lim->max_bytes : IMG_DEFAULT_MAX_BYTES;
    uint64_t max_pixels = lim && lim->max_pixels ? lim->max_pixels : IMG_DEFAULT_MAX_PIXELS;
    uint64_t max_scan_pixels = lim && lim->max_scan_pixels ? lim->max_scan_pixels
                                                           : IMG_DEFAULT_MAX_SCAN_PIXELS;
    memset(out, 0, sizeof *out);
    if (!data || len == 0)
        return eng_err_set(err, ENG_EFORMAT, "empty image");
    if (len > max_bytes)
        return eng_err_set(err, ENG_ETOOLONG, "image is %zu bytes, over the limit of %zu", len,
                           max_bytes);
    int rc;
    if (len >= 8 && memcmp(data, png_magic, 8) == 0)
        rc = png_decode(data, len, max_pixels, out, err);
    else if (len >= 3 && data[0] == 0xff && data[1] == 0xd8 && data[2] == 0xff)
        rc = jpeg_decode(data, len, max_pixels, max_scan_pixels, out, err);
    else
        rc = unknown_format(data, len, err);
    if (rc)
        img_rgb8_free(out);
    return rc;
}
