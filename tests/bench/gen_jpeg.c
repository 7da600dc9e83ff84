/* Writes the benchmarks' test photo (tests/bench/bench_jpeg.h) to a file: the
 * image scripts/bench_http.sh sends in its CLIP zero-shot requests.
 *
 *   build/gen_jpeg OUT.jpg [WIDTH HEIGHT]     (640 x 480 by default)
 */
#include <stdio.h>
#include <stdlib.h>

#include "tests/bench/bench_jpeg.h"

int main(int argc, char **argv)
{
    if (argc != 2 && argc != 4) {
        fprintf(stderr, "usage: gen_jpeg OUT.jpg [WIDTH HEIGHT]\n");
        return 2;
    }
    int w = argc == 4 ? atoi(argv[2]) : 640, h = argc == 4 ? atoi(argv[3]) : 480;
    if (w < 2 || h < 2 || w > 65500 || h > 65500) {
        fprintf(stderr, "gen_jpeg: sides must be 2 to 65500 pixels\n");
        return 2;
    }
    unsigned char *jpeg;
    unsigned long len;
    bench_jpeg_pattern(w, h, &jpeg, &len);
    FILE *f = fopen(argv[1], "wb");
    int ok = f && fwrite(jpeg, 1, len, f) == len;
    ok = f && fclose(f) == 0 && ok;
    free(jpeg);
    if (!ok) {
        perror(argv[1]);
        return 1;
    }
    return 0;
}
