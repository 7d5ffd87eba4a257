/*
 * embed.c: compare two faces with libbridgeface from C.
 *
 *   embed MODEL.safetensors A.ppm B.ppm
 *
 * Loads the student, reads two binary PPM (P6, maxval 255) images, embeds each with
 * bf_embed_rgb8 (which resizes them to the model's input) and prints their cosine similarity
 * as "similarity 0.123456789" plus "same" or "different" against the model's threshold.
 * PPM keeps the example free of image libraries; convert other formats with e.g.
 * `convert face.jpg face.ppm` (ImageMagick) or `pnmtools`.
 *
 * Build (from the repository root):
 *   cargo build --release
 *   gcc -O2 -Wall -Wextra -Iinclude examples/c/embed.c target/release/libbridgeface.a \
 *       -lgcc_s -lutil -lrt -lpthread -lm -ldl -lc -o embed
 */
#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "bridgeface.h"

/* Largest side accepted, so that width * height * 3 cannot overflow and a corrupt header
 * cannot ask for gigabytes. */
#define PPM_MAX_SIDE 16384

typedef struct {
    size_t width, height;
    uint8_t *pixels; /* width * height * 3 bytes, packed rows */
} image_rgb8;

/* Skips whitespace and '#' comments in a PPM header. Returns the next character (or EOF). */
static int ppm_skip_space(FILE *f) {
    int c = fgetc(f);
    for (;;) {
        if (c == '#') {
            while (c != '\n' && c != EOF) c = fgetc(f);
        } else if (c != EOF && isspace(c)) {
            c = fgetc(f);
        } else {
            return c;
        }
    }
}

/* Reads one unsigned decimal header field; returns 0 on success. The last field (maxval) must
 * end in exactly one whitespace byte, since the raster follows it directly. */
static int ppm_read_uint(FILE *f, unsigned long *out, int last) {
    int c = ppm_skip_space(f);
    if (c == EOF || !isdigit(c)) return -1;
    unsigned long v = 0;
    while (c != EOF && isdigit(c)) {
        v = v * 10 + (unsigned long)(c - '0');
        if (v > 1000000UL) return -1; /* far beyond any limit we accept */
        c = fgetc(f);
    }
    /* The field must end in whitespace (or a comment); push back anything else. */
    if (c == '#' && !last) {
        ungetc(c, f);
    } else if (c == EOF || !isspace(c)) {
        return -1;
    }
    *out = v;
    return 0;
}

/* Reads a binary PPM (P6, maxval 255). Returns 0 on success; on failure prints why. */
static int read_ppm(const char *path, image_rgb8 *img) {
    img->pixels = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        return -1;
    }
    unsigned long w = 0, h = 0, maxval = 0;
    int ok = fgetc(f) == 'P' && fgetc(f) == '6';
    if (!ok) {
        fprintf(stderr, "%s: not a binary PPM (P6) file\n", path);
    } else if (ppm_read_uint(f, &w, 0) || ppm_read_uint(f, &h, 0) || ppm_read_uint(f, &maxval, 1)) {
        fprintf(stderr, "%s: malformed PPM header\n", path);
        ok = 0;
    } else if (w == 0 || h == 0 || w > PPM_MAX_SIDE || h > PPM_MAX_SIDE) {
        fprintf(stderr, "%s: image size %lux%lu is out of range (1..%d)\n", path, w, h,
                PPM_MAX_SIDE);
        ok = 0;
    } else if (maxval != 255) {
        fprintf(stderr, "%s: maxval %lu is not supported (only 255)\n", path, maxval);
        ok = 0;
    }
    /* The single whitespace after maxval was consumed by ppm_read_uint. */
    if (ok) {
        size_t bytes = (size_t)w * (size_t)h * 3;
        img->pixels = malloc(bytes);
        if (!img->pixels) {
            fprintf(stderr, "%s: out of memory for %zu bytes\n", path, bytes);
            ok = 0;
        } else if (fread(img->pixels, 1, bytes, f) != bytes) {
            fprintf(stderr, "%s: truncated pixel data (expected %zu bytes)\n", path, bytes);
            ok = 0;
        } else {
            img->width = w;
            img->height = h;
        }
    }
    fclose(f);
    if (!ok) {
        free(img->pixels);
        img->pixels = NULL;
        return -1;
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s MODEL.safetensors A.ppm B.ppm\n", argv[0]);
        return 2;
    }
    int rc = 1;
    bf_model *model = NULL;
    image_rgb8 img[2] = {{0, 0, NULL}, {0, 0, NULL}};
    float *emb = NULL;
    bf_model_info_t info;
    float cos = 0.0f;

    if (bf_model_load(argv[1], &model) != BF_OK) {
        fprintf(stderr, "cannot load model: %s\n", bf_last_error());
        goto done;
    }
    if (bf_model_info(model, &info) != BF_OK) {
        fprintf(stderr, "model info: %s\n", bf_last_error());
        goto done;
    }
    fprintf(stderr, "bridgeface %s: model %ux%u input, %u-float embeddings, %llu parameters\n",
            bf_version(), info.resolution, info.resolution, info.embedding_size,
            (unsigned long long)info.parameter_count);

    emb = malloc(2 * (size_t)info.embedding_size * sizeof(float));
    if (!emb) {
        fprintf(stderr, "out of memory\n");
        goto done;
    }
    for (int i = 0; i < 2; i++) {
        if (read_ppm(argv[2 + i], &img[i]) != 0) goto done;
        /* One call per image: the two may differ in size. Rows are packed: stride = width * 3. */
        bf_status s = bf_embed_rgb8(model, img[i].pixels, 1, img[i].height, img[i].width,
                                    img[i].width * 3, emb + (size_t)i * info.embedding_size);
        if (s != BF_OK) {
            fprintf(stderr, "%s: cannot embed (status %d): %s\n", argv[2 + i], (int)s,
                    bf_last_error());
            goto done;
        }
    }
    if (bf_similarity(emb, emb + info.embedding_size, info.embedding_size, &cos) != BF_OK) {
        fprintf(stderr, "similarity: %s\n", bf_last_error());
        goto done;
    }
    printf("similarity %.9f %s\n", cos, cos >= info.threshold ? "same" : "different");
    rc = 0;

done:
    free(emb);
    free(img[0].pixels);
    free(img[1].pixels);
    if (model) bf_model_free(model);
    return rc;
}
