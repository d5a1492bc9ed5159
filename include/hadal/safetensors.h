/*
 * hadal/safetensors.h - a safetensors reader: single file or a sharded set described by
 * model.safetensors.index.json, mmap'ed read-only, header validated before any use.
 *
 * Validation: the 8-byte header length is within the file; the header is a JSON object of
 * tensors {dtype, shape, data_offsets} (+ optional "__metadata__" of strings); every dtype is
 * known; shape elements are non-negative and their product times the element size equals the
 * byte range; offsets are in bounds of the data section; ranges do not overlap. Errors name
 * the file and the tensor. Tensor data is never copied: pages are touched only when a caller
 * reads them, so a worker that reads a subset of layers keeps a small resident set.
 * A set is immutable after open and may be read from any thread.
 * Alignment: the format packs tensors back to back, so t->data is aligned to its element
 * size only when the writer arranged it (gen-model does; official checkpoints mostly do, but
 * e.g. a 12-byte F32 [3] tensor misaligns what follows). Copy (memcpy) before typed access
 * unless ((uintptr_t)t->data % hd_dtype_size(t->dtype)) == 0.
 */
#ifndef HADAL_SAFETENSORS_H
#define HADAL_SAFETENSORS_H

#include "hadal/dtype.h"
#include "hadal/status.h"

#include <stddef.h>
#include <stdint.h>

#define HD_ST_MAX_DIMS 8

typedef struct {
    const char *name;               /* tensor name as stored */
    hd_dtype_t dtype;               /* element type */
    int ndim;                       /* number of dimensions (0 = scalar) */
    int64_t shape[HD_ST_MAX_DIMS];  /* dimensions, outermost first */
    const void *data;               /* mmap'ed bytes */
    size_t nbytes;                  /* bytes of data */
    const char *file;               /* path of the shard holding it */
} hd_st_tensor_t;

typedef struct hd_st_set *hd_st_set_h;

/*
 * Open @path: a .safetensors file, an index .json, or a directory holding
 * model.safetensors.index.json or a single *.safetensors file. On failure @err says why.
 */
hd_status_t hd_st_open(const char *path, hd_st_set_h *set_p, char *err, size_t err_len);
void hd_st_close(hd_st_set_h set);

/* The tensor named @name, or NULL. */
const hd_st_tensor_t *hd_st_find(hd_st_set_h set, const char *name);
size_t hd_st_count(hd_st_set_h set);
const hd_st_tensor_t *hd_st_at(hd_st_set_h set, size_t i);
int64_t hd_st_numel(const hd_st_tensor_t *t);
/* The path given to hd_st_open (file, index or directory); owned by the set. */
const char *hd_st_path(hd_st_set_h set);
/* Number of files (shards) in the set. */
size_t hd_st_file_count(hd_st_set_h set);

/* ---- writer (used by gen-model and tests) ---- */
typedef struct hd_st_writer *hd_st_writer_h;

/* Start a file at @path; tensors are added, then hd_st_writer_finish writes it. */
hd_status_t hd_st_writer_create(const char *path, hd_st_writer_h *w_p);
/* Copies @nbytes of @data; the shape's byte size must match. */
hd_status_t hd_st_writer_add(hd_st_writer_h w, const char *name, hd_dtype_t dtype, int ndim,
                             const int64_t *shape, const void *data, size_t nbytes);
hd_status_t hd_st_writer_finish(hd_st_writer_h w); /* writes and frees */
void hd_st_writer_abort(hd_st_writer_h w);         /* frees without writing */

/*
 * Streaming form, for files larger than memory: declare every tensor (name, dtype, shape),
 * then hand the bytes of all tensors, in declaration order, to hd_st_writer_write in pieces
 * of any size; hd_st_writer_finish checks that exactly the declared bytes arrived. A writer
 * uses either hd_st_writer_add or declare/write, not both (HD_ERR_INVALID_PARAM).
 * The file is written as <path>.tmp and renamed into place by finish; abort removes it.
 */
hd_status_t hd_st_writer_declare(hd_st_writer_h w, const char *name, hd_dtype_t dtype, int ndim,
                                 const int64_t *shape);
hd_status_t hd_st_writer_write(hd_st_writer_h w, const void *data, size_t nbytes);
/* Bytes of the whole file as it will be written (header included), once all are declared. */
uint64_t hd_st_writer_file_size(hd_st_writer_h w);

#endif /* HADAL_SAFETENSORS_H */
