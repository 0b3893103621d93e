/*
 * UniMed for Orthanc — DICOM reading and pixel pipeline (public C API).
 *
 * The implementation is C++17 on top of DCMTK (parsing, RLE, JPEG, JPEG-LS)
 * and OpenJPEG (JPEG 2000); this header is plain C11.  See docs/DICOM.md for
 * the supported transfer syntaxes, the exact pixel pipeline and the limits.
 *
 * Thread safety: codec registration is done once, internally, on first use.
 * A handle must not be used by two threads at the same time; different
 * handles may be used concurrently.
 *
 * Errors: every function that can fail takes (err, errlen) and writes one
 * line "NAME: reason" there (NAME = the path, or the name given to
 * udcm_open_memory).  err may be NULL.
 */
#ifndef UNIMED_DICOM_H
#define UNIMED_DICOM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- limits ------------------------------------------------------------ */

/* Checked after the header has been parsed and before any pixel buffer is
 * allocated.  Zero in a field means "no limit" for that field. */
typedef struct udcm_limits {
    uint32_t max_rows;          /* default 65535 (the DICOM maximum) */
    uint32_t max_columns;       /* default 65535 */
    uint32_t max_frames;        /* default 1000000 */
    uint64_t max_frame_pixels;  /* rows*columns of one frame, default 2^28 */
    uint64_t max_frame_bytes;   /* decoded bytes of one frame, default 2^30 */
    uint64_t max_input_bytes;   /* file / buffer size, default 2^33 (8 GiB) */
} udcm_limits;

void udcm_limits_default(udcm_limits *limits);

/* ---- handle ------------------------------------------------------------ */

typedef struct udcm_handle udcm_handle;

/* limits may be NULL (defaults).  Return NULL on error (message in err). */
udcm_handle *udcm_open_file(const char *path, const udcm_limits *limits,
                            char *err, size_t errlen);
/* The buffer is only read during the call (it is not kept).
 * name is used in error messages (may be NULL: "<memory>"). */
udcm_handle *udcm_open_memory(const void *buf, size_t len, const char *name,
                              const udcm_limits *limits, char *err, size_t errlen);
void udcm_close(udcm_handle *h);
/* Frees buffers returned by this library (same as free()). */
void udcm_free(void *p);

/* ---- header information ------------------------------------------------ */

typedef struct udcm_info {
    char name[256];                 /* as given at open (truncated) */
    char study_uid[65], series_uid[65], sop_instance_uid[65];
    char sop_class_uid[65];
    char sop_class_name[96];        /* DCMTK's name for the SOP class, or "" */
    char modality[17];
    char transfer_syntax_uid[65];
    char transfer_syntax_name[96];

    int has_pixel_data;             /* (7FE0,0010) present */
    int is_image;                   /* has_pixel_data and Rows/Columns > 0 */
    int encapsulated;               /* compressed transfer syntax */
    int rows, columns, frames;      /* frames = NumberOfFrames or 1 */
    int samples_per_pixel;
    char photometric[17];
    int bits_allocated, bits_stored, high_bit;
    int pixel_representation;       /* 0 unsigned, 1 two's complement */
    int planar_configuration;

    /* Modality LUT of frame 0: top level or functional groups. */
    int has_rescale;
    double rescale_slope, rescale_intercept;
    int has_modality_lut_sequence;

    /* First window pair of frame 0 (top level or Frame VOI LUT Sequence). */
    int has_window;
    double window_center, window_width;
    char voi_lut_function[17];      /* "" when absent (LINEAR applies) */
    int has_voi_lut_sequence;

    /* Spacing in mm: [0] between rows (vertical), [1] between columns. */
    int has_pixel_spacing;          /* top level or Pixel Measures Sequence */
    double pixel_spacing[2];
    int has_imager_pixel_spacing;
    double imager_pixel_spacing[2];

    int has_image_position;
    double image_position[3];
    int has_image_orientation;
    double image_orientation[6];
    int has_instance_number;
    int instance_number;
    int has_series_number;
    int series_number;

    char body_part_examined[65];
    char series_description[129];
    char patient_id[65];
    char patient_name[325];
    char study_date[17];
    char accession_number[17];

    int is_enhanced;                /* has a functional groups sequence */

    /* Whole-slide microscopy (VL Whole Slide Microscopy Image Storage). */
    int is_wsi;
    char image_type[129];           /* full Image Type, e.g. DERIVED\PRIMARY\VOLUME\NONE */
    char wsi_image_flavor[17];      /* Image Type value 3: VOLUME, THUMBNAIL, LABEL, OVERVIEW */
    uint32_t total_matrix_columns;  /* 0 when absent */
    uint32_t total_matrix_rows;
    char dimension_organization_type[17]; /* TILED_FULL, TILED_SPARSE, 3D, ... */
} udcm_info;

int udcm_get_info(const udcm_handle *h, udcm_info *info);

/* ---- decoding ---------------------------------------------------------- */

/* 1 when the header describes pixels this library can decode (checks done
 * at open: Pixel Data present, sizes, bits, photometric, limits); else 0 with
 * the reason in err.  Frames may still fail to decode (corrupt data). */
int udcm_decodable(const udcm_handle *h, char *err, size_t errlen);

/* Number of int32 values udcm_decode_stored writes: rows*columns*spp. */
size_t udcm_frame_samples(const udcm_handle *h);

/* Decode frame `frame` (0-based) to stored values: BitsStored masked (after
 * shifting by HighBit+1-BitsStored), sign-extended when PixelRepresentation
 * is 1, samples interleaved whatever the planar configuration.
 * YBR_FULL_422 native data is upsampled to 3 samples per pixel.
 * decoded_photometric (17 bytes, may be NULL) receives the colour model of
 * the values written: usually the stored Photometric Interpretation, but
 * "RGB" when the codec did the colour transform (JPEG 2000 MCT for
 * YBR_ICT/YBR_RCT, JPEG YCbCr) and "YBR_FULL" for upsampled YBR_FULL_422.
 * out_count must be >= udcm_frame_samples(h).  Returns 0 or -1. */
int udcm_decode_stored(udcm_handle *h, uint32_t frame, int32_t *out, size_t out_count,
                       char *decoded_photometric, char *err, size_t errlen);

/* ---- pixel pipeline ---------------------------------------------------- */

typedef struct udcm_pipeline_opts {
    double ct_window_center;    /* default VOI for CT without one: 40 */
    double ct_window_width;     /* 400 */
    double percentile_low;      /* other modalities without VOI: 0.5 */
    double percentile_high;     /* 99.5 */
    int resample_square;        /* 1: resample non-square pixels (default) */
    int apply_voi;              /* 1 (default); 0: skip the stored VOI and
                                   use the default (CT window / percentiles) */
} udcm_pipeline_opts;

void udcm_pipeline_opts_default(udcm_pipeline_opts *opts);

/* Pipeline of docs/DICOM.md for one frame: stored values -> Modality LUT ->
 * VOI -> 8 bit (MONOCHROME1 inverted) -> RGB -> square pixels.
 * *rgb receives a malloc'd w*h*3 buffer (free with udcm_free).
 * opts may be NULL (defaults).  Returns 0 or -1. */
int udcm_frame_rgb8(udcm_handle *h, uint32_t frame, const udcm_pipeline_opts *opts,
                    uint8_t **rgb, int *w, int *h_out, char *err, size_t errlen);

/* ---- model input (study.c) --------------------------------------------- */

/* One frame as the model's input: the pixel pipeline above, then the
 * shorter side resized to `size` with Pillow's antialiased bicubic filter,
 * centre-cropped to size x size, scaled to [0, 1] and normalised per channel.
 * out: float32 3 x size x size, channel-major. rgb_out (may be NULL): the
 * size x size x 3 8-bit picture before normalisation. Returns 0 or -1. */
int udcm_frame_tensor(udcm_handle *h, uint32_t frame, const udcm_pipeline_opts *opts, int size,
                      const float mean[3], const float std[3], float *out, uint8_t *rgb_out,
                      char *err, size_t errlen);

/* ---- studies and series (study.c) --------------------------------------- */

typedef struct udcm_instance {
    char *path;                     /* file path, or the name of an in-memory instance */
    const void *data;               /* in-memory instance (borrowed), NULL for files */
    size_t len;
    udcm_info info;
} udcm_instance;

typedef struct udcm_series {
    char study_uid[65], series_uid[65];
    char modality[17], body_part[65], sop_class_uid[65];
    char series_description[129];
    int series_number;
    int is_image;                   /* some instance has pixel data */
    int is_wsi;                     /* VL Whole Slide Microscopy */
    udcm_instance *instances;       /* in the order found */
    int n_instances;
} udcm_series;

typedef struct udcm_collection {
    udcm_series *series;            /* in the order first seen */
    int n_series;
    int n_files, n_skipped;         /* files looked at; not DICOM or unreadable */
} udcm_collection;

/* Receives one line per skipped file ("skipped PATH: reason"). */
typedef void (*udcm_collect_warn)(void *ctx, const char *message);

/* Reads the headers of every file under `paths` (files, or folders walked
 * recursively in name order; hidden entries skipped) and groups them by
 * study and series. Unreadable or non-DICOM files are counted, reported
 * through warn (may be NULL) and skipped. Returns 0, or -1 (out of memory). */
int udcm_collect(const char *const *paths, int n_paths, const udcm_limits *limits,
                 udcm_collect_warn warn, void *ctx, udcm_collection *out, char *err,
                 size_t errlen);
/* The same for instances held in memory (buffers are borrowed: they must
 * outlive the collection). */
typedef struct udcm_memory_file {
    const char *name;
    const void *data;
    size_t len;
} udcm_memory_file;
int udcm_collect_memory(const udcm_memory_file *files, int n_files, const udcm_limits *limits,
                        udcm_collect_warn warn, void *ctx, udcm_collection *out, char *err,
                        size_t errlen);
void udcm_collection_free(udcm_collection *c);
/* Opens an instance of a collection (from its file or its buffer). */
udcm_handle *udcm_instance_open(const udcm_instance *inst, const udcm_limits *limits, char *err,
                                size_t errlen);

typedef struct udcm_frame_ref {
    int instance;                   /* index into series->instances */
    uint32_t frame;
} udcm_frame_ref;

/* The frames the model sees: image instances ordered along the slice normal
 * (ImagePositionPatient on the cross product of ImageOrientationPatient),
 * else by InstanceNumber; all frames of each in order; then K = min(N, max)
 * of the N frames at indices floor((i + 0.5) * N / K). out holds max_frames
 * entries. Returns K, or -1 (out of memory). */
int udcm_series_pick_frames(const udcm_series *s, int max_frames, udcm_frame_ref *out);

#ifdef __cplusplus
}
#endif

#endif /* UNIMED_DICOM_H */
