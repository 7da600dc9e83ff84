#include "engine/tensor.h"

#include <strings.h>

const eng_dtype_traits eng_dtypes[ENG_DTYPE_COUNT] = {
    [ENG_F32] = {"F32", "f32", 4, 1},  [ENG_F16] = {"F16", "f16", 2, 1},
    [ENG_BF16] = {"BF16", "bf16", 2, 1}, [ENG_F64] = {"F64", "f64", 8, 1},
    [ENG_I64] = {"I64", "i64", 8, 0},  [ENG_I32] = {"I32", "i32", 4, 0},
    [ENG_I16] = {"I16", "i16", 2, 0},  [ENG_I8] = {"I8", "int8", 1, 0},
    [ENG_U8] = {"U8", "u8", 1, 0},     [ENG_BOOL] = {"BOOL", "bool", 1, 0},
};

int eng_dtype_from_st_name(const char *s)
{
    for (int i = 0; i < ENG_DTYPE_COUNT; i++)
        if (strcmp(eng_dtypes[i].st_name, s) == 0)
            return i;
    return -1;
}

int eng_dtype_from_name(const char *s)
{
    for (int i = 0; i < ENG_DTYPE_COUNT; i++)
        if (strcasecmp(eng_dtypes[i].name, s) == 0)
            return i;
    return -1;
}

uint16_t eng_f32_to_f16(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000;
    uint32_t absx = x & 0x7fffffffu;
    if (absx > 0x7f800000u)
        return (uint16_t)(sign | 0x7e00); /* NaN */
    if (absx >= 0x477ff000u)              /* rounds to >= 65520: infinity */
        return (uint16_t)(sign | 0x7c00);
    if (absx < 0x38800000u) { /* below the smallest normal half: subnormal or 0 */
        float a;
        memcpy(&a, &absx, 4);
        /* Adding 0.5 shifts the value so the FPU's own rounding lands on
         * the half's subnormal grid (2^-24), round-to-nearest-even included. */
        float r = a + 0.5f;
        uint32_t rb;
        memcpy(&rb, &r, 4);
        return (uint16_t)(sign | (rb - 0x3f000000u));
    }
    uint32_t mant_odd = (absx >> 13) & 1;
    absx += ((uint32_t)(15 - 127) << 23) + 0xfff + mant_odd;
    return (uint16_t)(sign | (absx >> 13));
}

void eng_convert_to_f32(eng_dtype src_type, const void *src, float *dst, size_t n)
{
    const unsigned char *p = src;
    switch (src_type) {
    case ENG_F32:
        memcpy(dst, src, n * 4);
        break;
    case ENG_F16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            dst[i] = eng_f16_to_f32(h);
        }
        break;
    case ENG_BF16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            dst[i] = eng_bf16_to_f32(h);
        }
        break;
    case ENG_F64:
        for (size_t i = 0; i < n; i++) {
            double d;
            memcpy(&d, p + 8 * i, 8);
            dst[i] = (float)d;
        }
        break;
    default:
        break; /* callers only pass float dtypes (checked at load) */
    }
}
