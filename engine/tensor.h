/* Element types and the conversions between them.
 *
 * eng_dtype names what a checkpoint stores and what a weight is held as after
 * load; the traits table (one row per dtype) is the only place that knows a
 * dtype's name and size. */
#ifndef ENG_TENSOR_H
#define ENG_TENSOR_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef enum eng_dtype {
    ENG_F32,
    ENG_F16,
    ENG_BF16,
    ENG_F64,
    ENG_I64,
    ENG_I32,
    ENG_I16,
    ENG_I8,
    ENG_U8,
    ENG_BOOL,
    ENG_DTYPE_COUNT
} eng_dtype;

typedef struct eng_dtype_traits {
    const char *st_name; /* the safetensors header's name: "F32", "BF16", ... */
    const char *name;    /* the name users write: "f32", "bf16", ... */
    size_t size;         /* bytes per element */
    int is_float;
} eng_dtype_traits;

extern const eng_dtype_traits eng_dtypes[ENG_DTYPE_COUNT];

/* Looks a dtype up by its safetensors name; returns -1 when unknown. */
int eng_dtype_from_st_name(const char *s);
/* Looks a dtype up by its user-facing name ("f32", "f16", "bf16", "int8" -> ENG_I8). */
int eng_dtype_from_name(const char *s);

static inline float eng_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
    if (exp == 0) {
        if (man == 0) {
            bits = sign;
        } else { /* subnormal: normalise the mantissa */
            exp = 127 - 15 + 1;
            while (!(man & 0x400)) {
                man <<= 1;
                exp--;
            }
            bits = sign | (exp << 23) | ((man & 0x3ff) << 13);
        }
    } else if (exp == 0x1f) {
        bits = sign | 0x7f800000u | (man << 13);
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

static inline float eng_bf16_to_f32(uint16_t h)
{
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

/* Round-to-nearest-even float -> bf16, NaN kept a NaN. */
static inline uint16_t eng_f32_to_bf16(float f)
{
    uint32_t bits;
    memcpy(&bits, &f, 4);
    if ((bits & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((bits >> 16) | 0x40);
    bits += 0x7fffu + ((bits >> 16) & 1);
    return (uint16_t)(bits >> 16);
}

/* Round-to-nearest-even float -> IEEE half, with overflow to infinity. */
uint16_t eng_f32_to_f16(float f);

/* Converts n elements of a float dtype (F32, F16, BF16, F64) at src (any
 * alignment) to float32 at dst. */
void eng_convert_to_f32(eng_dtype src_type, const void *src, float *dst, size_t n);

#endif
