/*
 * bridgeface.h: the C interface of libbridgeface.a, a tiny low-resolution face-embedding
 * network (the BridgeNet student of bridge distillation) and its CPU kernels.
 *
 * Hand-written; it must match src/ffi.rs (tests/ffi.rs and tests/c_example.rs check that the
 * example program built against it agrees with the `bridge` CLI).
 *
 * Linking (Linux, gcc or clang):
 *     cargo build --release
 *     gcc -O2 -Iinclude prog.c target/release/libbridgeface.a \
 *         -lstdc++ -lgcc_s -lutil -lrt -lpthread -lm -ldl -lc -o prog
 * (the system libraries are what `cargo rustc --release --lib -- --print native-static-libs`
 * lists for this target).
 *
 * Usage:
 *     bf_model *m;
 *     if (bf_model_load("student.safetensors", &m) != BF_OK) {
 *         fprintf(stderr, "%s\n", bf_last_error());
 *     }
 *     bf_model_info_t info;  bf_model_info(m, &info);
 *     float *emb = malloc(n * info.embedding_size * sizeof(float));
 *     bf_embed_rgb8(m, pixels, n, height, width, width * 3, emb);
 *     ...
 *     bf_model_free(m);
 *
 * THREAD SAFETY
 *     Every function may be called from any thread, concurrently. A model is immutable after
 *     bf_model_load, so one model may be used by many threads at once without locking. Freeing a
 *     model while another thread is inside a call with it is safe: that call finishes normally
 *     and later calls get BF_ERR_INVALID_HANDLE. bf_last_error() is per thread.
 *
 * ERRORS
 *     Every fallible function returns a bf_status. On an error nothing is written to output
 *     buffers (bf_model_load sets *out_model to NULL), and bf_last_error() returns a one-line
 *     message. Null pointers, zero counts, wrong sizes and freed or invalid model handles are
 *     reported as errors, never crashes. No Rust panic crosses this interface: an internal bug is
 *     reported as BF_ERR_INTERNAL. What the library cannot check is the size of the buffers you
 *     pass: each function states how many bytes or floats its pointers must hold.
 */
#ifndef BRIDGEFACE_H
#define BRIDGEFACE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Status codes. BF_OK is 0; every other value is an error. */
typedef enum bf_status {
    BF_OK = 0,
    /* A required pointer argument was NULL. */
    BF_ERR_NULL_POINTER = 1,
    /* The model handle is not a live model: already freed, or not from bf_model_load. */
    BF_ERR_INVALID_HANDLE = 2,
    /* An argument is out of range: n == 0, an empty image, row_stride < width * 3, a shape
     * other than the model's input, a size that overflows, non-finite input, a float or
     * struct pointer that is not aligned for its type. */
    BF_ERR_INVALID_ARGUMENT = 3,
    /* A file could not be read (it does not exist, or permission is denied). */
    BF_ERR_IO = 4,
    /* The file is not a valid student weight file (corrupt, truncated, wrong tensors). */
    BF_ERR_MODEL_FORMAT = 5,
    /* This CPU lacks the instruction set the kernels need (or BRIDGE_ISA names one it lacks). */
    BF_ERR_UNSUPPORTED = 6,
    /* A bug inside the library was caught; the library stays usable. Please report it. */
    BF_ERR_INTERNAL = 7,
    /* Any other library error; bf_last_error() says which. */
    BF_ERR_OTHER = 8
} bf_status;

/* An opaque model handle. It is never a pointer to memory you may read; pass it back only. */
typedef struct bf_model bf_model;

/* What bf_model_info reports. */
typedef struct bf_model_info_t {
    /* Input side in pixels: the model takes resolution x resolution RGB faces. */
    uint32_t resolution;
    /* Floats per embedding (128). Size embedding buffers as n * embedding_size. */
    uint32_t embedding_size;
    /* Values stored in the weight file (batch-norm running statistics included). */
    uint64_t parameter_count;
    /* Cosine similarity at or above which two faces are the same person. */
    float threshold;
    /* Per-channel (R, G, B) input normalisation: x = (pixel - mean) / std, pixel in 0..255. */
    float mean[3];
    float std[3];
} bf_model_info_t;

/* Loads a student weight file (.safetensors, as written by `bridge init` or the trainer).
 * On success stores a new handle in *out_model; on failure stores NULL there (when out_model
 * is not NULL). path: NUL-terminated (bytes on Unix, UTF-8 elsewhere).
 * Errors: BF_ERR_NULL_POINTER, BF_ERR_IO, BF_ERR_MODEL_FORMAT, BF_ERR_UNSUPPORTED. */
bf_status bf_model_load(const char *path, bf_model **out_model);

/* Fills *out_info with the model's sizes, threshold and normalisation.
 * Errors: BF_ERR_NULL_POINTER, BF_ERR_INVALID_HANDLE. */
bf_status bf_model_info(const bf_model *model, bf_model_info_t *out_info);

/* Embeds n RGB8 images, each height x width, into out: n * embedding_size floats, one
 * L2-normalised embedding after another. Images of another size than the model's input are
 * resized by area averaging, exactly as `bridge embed` and `bridge verify` do.
 *
 * Layout: image i starts at pixels + i * height * row_stride; each row holds width * 3 bytes
 * R, G, B, R, G, B, ... then padding up to row_stride (row_stride == width * 3 when packed).
 * pixels must hold (n * height - 1) * row_stride + width * 3 bytes (the last row need not be
 * padded); out must hold n * embedding_size floats and is written only on success.
 * Errors: BF_ERR_NULL_POINTER, BF_ERR_INVALID_HANDLE, BF_ERR_INVALID_ARGUMENT (n == 0,
 * height or width 0, row_stride < width * 3, sizes that overflow). */
bf_status bf_embed_rgb8(const bf_model *model, const uint8_t *pixels, size_t n, size_t height,
                        size_t width, size_t row_stride, float *out);

/* Embeds n faces that are already resized and normalised (x = (pixel - mean) / std, see
 * bf_model_info), as float NCHW: input holds n * channels * height * width floats, and the
 * stated shape must be [n, 3, resolution, resolution]. out must hold n * embedding_size floats
 * and is written only on success.
 * Errors: BF_ERR_NULL_POINTER, BF_ERR_INVALID_HANDLE, BF_ERR_INVALID_ARGUMENT (n == 0, a shape
 * other than the model's, NaN or infinite input). */
bf_status bf_embed_f32(const bf_model *model, const float *input, size_t n, size_t channels,
                       size_t height, size_t width, float *out);

/* Cosine similarity of two vectors of len floats into *out_similarity (0 if either is all
 * zeros). Compare it with bf_model_info_t.threshold. Needs no model.
 * Errors: BF_ERR_NULL_POINTER, BF_ERR_INVALID_ARGUMENT (len == 0). */
bf_status bf_similarity(const float *a, const float *b, size_t len, float *out_similarity);

/* Frees a model. The handle is dead afterwards: using it again, or freeing it twice, returns
 * BF_ERR_INVALID_HANDLE (no crash). bf_model_free(NULL) returns BF_ERR_NULL_POINTER, which is
 * harmless to ignore. */
bf_status bf_model_free(bf_model *model);

/* The message of the last failed bf_* call on this thread, or "" if that call succeeded.
 * Never NULL. Valid until the next bf_* call on the same thread; copy it to keep it. */
const char *bf_last_error(void);

/* The library version, e.g. "0.1.0". Never NULL, static. */
const char *bf_version(void);

#ifdef __cplusplus
}
#endif

#endif /* BRIDGEFACE_H */
