/*
 * UniMed for Orthanc — DICOM reading and pixel pipeline (public C API).
 *
 * The implementation is C++17 on top of DCMTK (parsing, JPEG, JPEG-LS, SR)
 * and OpenJPEG (JPEG 2000), with our own RLE and Deflate decoders; this
 * header is plain C11.  See docs/DICOM.md for
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
    /* Structure, checked on the raw bytes before DCMTK parses them
     * (docs/DICOM.md "Robustness"): */
    uint32_t max_sequence_depth;/* sequences nested in sequences, default 64 */
    uint64_t max_elements;      /* data elements + items in the file, default 4000000 */
    /* Decode budget: the peak bytes decoding one frame through the pixel
     * pipeline takes (compressed frame, codec output, stored values and the
     * pipeline's intermediates; UDCM_DECODE_BYTES_PER_SAMPLE per sample of
     * the frame), computed from the header before anything is allocated.  A frame over it is refused, except JPEG 2000
     * frames, which udcm_frame_rgb8 / udcm_frame_tensor decode at the
     * largest reduced resolution level that fits.  Default 2^29 (512 MiB). */
    uint64_t max_decode_bytes;
} udcm_limits;

/* Bytes per decoded sample counted by max_decode_bytes: the codec's output
 * (up to 4, OpenJPEG's int32 planes), our copy of it (4), the int32 stored
 * values (4), and at most one double per sample (8, only when the grey
 * window comes from the frame's percentiles) with the 8-bit results. */
#define UDCM_DECODE_BYTES_PER_SAMPLE 20

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

/* The last step alone: a size x size x 3 8-bit picture (e.g. a whole-slide
 * tile) to the model's float32 3 x size x size tensor, (v/255 - mean)/std. */
void udcm_rgb8_to_tensor(const uint8_t *rgb, int size, const float mean[3], const float std[3],
                         float *out);

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


/* ==== Structured Reports (sr_document.cpp and its parts, sr_reader.cpp) ====
 * UniMed for Orthanc — DICOM Structured Report writer and reader (C API).
 *
 * The writer turns the zero-shot findings of one study into a DICOM
 * Comprehensive SR object following TID 1500 "Imaging Measurement Report"
 * (one Measurement Group per applied label set, one Finding with its
 * Probability per label), plus the same report as DCMTK XML and the
 * findings as JSON.  The reader returns the measurement groups of a TID 1500
 * report (ours or another producer's).  See docs/REPORTS.md.
 *
 * Implementation: C++17 on DCMTK dcmsr and its TID 1500 classes (dicom/sr_document.cpp
 * and the parts listed in dicom/sr_internal.h; dicom/sr_reader.cpp); this
 * header is plain C11.
 *
 * Errors: functions that can fail take (err, errlen) and write one line
 * "NAME: reason" there (NAME = the file, or the request field at fault).
 * err may be NULL.  Return 0 on success, -1 on error.
 *
 * Thread safety: no global state; different requests may be written
 * concurrently.
 */

/* ---- shared types ------------------------------------------------------- */

/* A coded concept (Code Value, Coding Scheme Designator, Code Meaning).
 * All three must be non-empty in a request; the value must fit in 16
 * characters (SH), or it is written as a Long Code Value (> 16, UC). */
typedef struct udcm_sr_code {
    const char *value;
    const char *scheme;
    const char *meaning;
} udcm_sr_code;

/* A reference to one image, or one frame of a multi-frame image. */
typedef struct udcm_sr_image_ref {
    const char *study_uid;          /* NULL or "": the study of the source */
    const char *series_uid;
    const char *sop_class_uid;
    const char *sop_instance_uid;
    uint32_t frame;                 /* 1-based; 0 = the whole instance */
} udcm_sr_image_ref;

/* ---- writer ------------------------------------------------------------- */

typedef struct udcm_sr_finding {
    const char *label;              /* the label-set's label (JSON only) */
    udcm_sr_code code;              /* the finding's code (SCT, 99UNIMED, ...) */
    double probability;             /* in [0, 1] */
} udcm_sr_finding;

/* One applied label set = one Measurement Group. */
typedef struct udcm_sr_group {
    const char *label_set_name;
    const char *label_set_version;
    const char *label_set_hash;     /* feeds the UIDs; any printable string */
    const char *series_uid;         /* the source series the set was run on */
    const udcm_sr_finding *findings;
    size_t n_findings;              /* >= 1 */
    const udcm_sr_image_ref *images;/* the images actually used */
    size_t n_images;                /* >= 1 */
    const char *comment;            /* NULL or "": none; else a TEXT (121106, DCM,
                                     * "Comment") in the group, e.g. the model
                                     * card's warning that the set is not
                                     * validated (docs/REPORTS.md); it feeds
                                     * the SOP Instance UID */
} udcm_sr_group;

typedef struct udcm_sr_request {
    /* A source instance of the study: the patient and study modules are
     * copied from it.  Either a Part-10 file path, or a buffer (Part-10 or
     * raw dataset, Little Endian Explicit). */
    const char *source_path;
    const void *source_buffer;
    size_t source_len;

    const char *model_name;         /* required, e.g. "UniMed-CLIP ViT-B/16" */
    const char *model_version;      /* required */
    const char *model_hash;         /* required; feeds the UIDs */
    const char *manufacturer;       /* NULL: "UniMed for Orthanc" */
    const char *software_version;   /* NULL: model_version */
    const char *device_observer_uid;/* NULL: derived (2.25) from model name+hash */
    const char *device_observer_name; /* NULL: model_name */
    udcm_sr_code procedure;         /* value NULL: first item of the source's
                                     * Procedure Code Sequence, else
                                     * (363679005, SCT, "Imaging procedure") */
    const char *series_description; /* NULL: "UniMed AI findings — research use only" */
    int series_number;              /* 0: 9901 */
    const char *content_datetime;   /* NULL: now; else "YYYYMMDDHHMMSS" */

    const udcm_sr_group *groups;
    size_t n_groups;                /* >= 1 */
    int complete;                   /* 1: COMPLETE; 0: PARTIAL (some series failed) */

    /* Versions (docs/REPORTS.md, "Versions"): the report's identity follows
     * its content, and a new version names the one it replaces. */
    const char *const *input_sop_instance_uids; /* every analysed instance (any
                                     * order); they feed the SOP Instance UID */
    size_t n_inputs;
    int instance_number;            /* 0: 1 */
    const char *predecessor_series_uid;       /* the report this one replaces */
    const char *predecessor_sop_instance_uid; /* (both NULL: none) */
} udcm_sr_request;

/* Where udcm_sr_write puts the report.  Start from
 * udcm_sr_write_default_params() (everything NULL: nothing written) and set
 * the outputs wanted:
 *   dcm_path              Part-10 file;
 *   dcm_buf, dcm_len      *dcm_buf = malloc'd Part-10 bytes (free with
 *                         free()), *dcm_len their length (dcm_len may be NULL);
 *   xml_path              DCMTK's XML form of the report (DSRDocument::writeXML);
 *   json_path             the findings as JSON (docs/REPORTS.md);
 *   sop_instance_uid_out  65 bytes: receives the SOP Instance UID. */
typedef struct udcm_sr_write_params {
    const char *dcm_path;
    uint8_t **dcm_buf;
    size_t *dcm_len;
    const char *xml_path;
    const char *json_path;
    char *sop_instance_uid_out;
} udcm_sr_write_params;

udcm_sr_write_params udcm_sr_write_default_params(void);

/* Write the SR of a request to the outputs of params (NULL: none, which
 * still checks the request and builds the report).  The parts of the writer:
 * dicom/sr_internal.h.  Returns 0 or -1. */
int udcm_sr_write(const udcm_sr_request *req, const udcm_sr_write_params *params,
                  char *err, size_t errlen);

/* The deterministic UIDs a request gets, without writing anything.
 * study_uid: the source's Study Instance UID.  Each output is 65 bytes
 * (NULL to skip).  tracking_uids_out: n_groups * 65 bytes or NULL. */
int udcm_sr_derive_uids(const udcm_sr_request *req, const char *study_uid,
                        char *series_uid_out, char *sop_instance_uid_out,
                        char *tracking_uids_out, char *err, size_t errlen);

/* "2.25.<decimal>" from a UUIDv5-style SHA-1 of the given bytes
 * (docs/REPORTS.md).  out: 65 bytes. */
void udcm_sr_uid_from_name(const void *name, size_t len, char *out);

/* Validate an XML file against an XML Schema (libxml2).  Returns 0 if
 * valid; -1 with the first problems in err. */
int udcm_sr_validate_xml(const char *xml_path, const char *xsd_path,
                         char *err, size_t errlen);

/* ---- reader ------------------------------------------------------------- */

/* A CODE content item of a group (the Finding (121071, DCM) items, and any
 * other coded evaluation), with the Probability attached to it, if any. */
typedef struct udcm_sr_read_finding {
    udcm_sr_code concept_name;      /* e.g. (121071, DCM, "Finding") */
    udcm_sr_code code;              /* the value */
    int has_probability;
    double probability;             /* (122157, DCM, "Probability") under it */
} udcm_sr_read_finding;

/* A NUM content item of a group that is not a finding's Probability. */
typedef struct udcm_sr_read_measurement {
    udcm_sr_code concept_name;
    double value;                   /* Floating Point Value if present, else DS */
    const char *value_text;         /* the DS as written */
    udcm_sr_code unit;
} udcm_sr_read_measurement;

typedef struct udcm_sr_read_group {
    const char *tracking_id;        /* "" if absent */
    const char *tracking_uid;
    const char *algorithm_name;     /* TID 4019, "" if absent */
    const char *algorithm_version;
    const char **algorithm_parameters;  /* TEXT values, n_algorithm_parameters */
    size_t n_algorithm_parameters;
    /* Our reports: from the "label_set_name=" etc. parameters; "" otherwise. */
    const char *label_set_name, *label_set_version, *label_set_hash;
    udcm_sr_read_finding *findings;
    size_t n_findings;
    udcm_sr_read_measurement *measurements;
    size_t n_measurements;
    udcm_sr_image_ref *images;      /* IMAGE items anywhere in the group (deduplicated) */
    size_t n_images;
    const char **comments;          /* TEXT (121106, DCM, "Comment") items directly in
                                     * the group, n_comments (ours: the model card's
                                     * warning, at most one) */
    size_t n_comments;
} udcm_sr_read_group;

/* A TEXT content item of the report narrative (any SR template: Basic
 * Text, Enhanced, Comprehensive; TID 2000 sections included).  Observation
 * context, concept modifiers, acquisition context, tracking identifiers and
 * TID 4019 algorithm identification items are not report text and are not
 * listed. */
typedef struct udcm_sr_text_item {
    udcm_sr_code concept_name;          /* e.g. (121071, DCM, "Finding") */
    udcm_sr_code section;           /* nearest enclosing CONTAINER's concept
                                     * (e.g. (121070, DCM, "Findings")); the
                                     * root's for items directly below it */
    const char *value;              /* the text */
} udcm_sr_text_item;

typedef struct udcm_sr_result {
    const char *sop_class_uid, *sop_instance_uid, *series_uid, *study_uid;
    const char *patient_name, *patient_id;
    const char *completion_flag, *verification_flag;
    const char *template_id;        /* root TID, e.g. "1500"; "" if absent */
    udcm_sr_code document_title;    /* root concept name */
    const char *device_observer_uid, *device_observer_name;
    const char *device_observer_manufacturer, *device_observer_model_name;
    udcm_sr_code procedure;         /* first Procedure reported; fields "" if absent */
    udcm_sr_image_ref *library;     /* Image Library entries */
    size_t n_library;
    udcm_sr_read_group *groups;     /* Measurement Groups, document order */
    size_t n_groups;
    udcm_sr_text_item *texts;       /* report-text TEXT items, document order */
    size_t n_texts;
    void *internal_;                /* owned storage; do not touch */
} udcm_sr_result;

/* Read an SR.  Returns NULL on error (message in err); free the result
 * with udcm_sr_result_free.  name is used in messages (NULL: "<memory>"). */
udcm_sr_result *udcm_sr_read_file(const char *path, char *err, size_t errlen);
udcm_sr_result *udcm_sr_read_memory(const void *buf, size_t len, const char *name,
                                    char *err, size_t errlen);
void udcm_sr_result_free(udcm_sr_result *res);

/* The findings JSON (same shape as the writer's json_path output) of a read
 * report.  Returns a malloc'd string (free()) or NULL. */
char *udcm_sr_result_json(const udcm_sr_result *res);

/* ==== Whole-slide images (wsi.cpp) ====
 * VL Whole Slide Microscopy: one series = one slide, one instance per
 * pyramid level (Image Type value 3 VOLUME), plus optional THUMBNAIL, LABEL
 * and OVERVIEW pictures (LABEL and OVERVIEW are never read).  A level is a
 * Total Pixel Matrix cut into frames (tiles): TILED_FULL (implicit order:
 * row by row, tile after tile) or TILED_SPARSE (Plane Position (Slide) of
 * each frame, Per-Frame Functional Groups).  Edge padding is cropped;
 * missing tiles are white.  Grey levels use one mapping for the whole slide
 * (rescale, then the first window; else Bits Stored <= 8 as is; else the
 * 0.5 / 99.5 percentiles of the overview picture).  See
 * docs/DICOM.md "Whole-slide images".  Errors name the file at fault (or
 * the series UID when no file is). */

#define UDCM_WSI_DEFAULT_TILES 16
#define UDCM_WSI_DEFAULT_TILE_SIZE 224
#define UDCM_WSI_DEFAULT_SPACING_MM 0.0005  /* 0.5 um/pixel (about 20x) */

typedef struct udcm_wsi_level {
    int instance;                   /* index into series->instances */
    char flavor[17];                /* "VOLUME" (also when Image Type is absent) or "THUMBNAIL" */
    uint32_t width, height;         /* Total Pixel Matrix Columns/Rows (Columns/Rows if absent) */
    int tile_width, tile_height;    /* Columns, Rows */
    int frames;
    char organization[17];          /* Dimension Organization Type as stored ("" if absent) */
    double spacing_mm;              /* mean Pixel Spacing (Pixel Measures); when absent derived
                                       from the largest VOLUME level that has one by the width
                                       ratio; 0 unknown */
} udcm_wsi_level;

/* The levels of a whole-slide series (from the collected headers: no file is
 * opened), largest first.  Writes min(count, max) entries to out (may be
 * NULL); returns the count, or -1. */
int udcm_wsi_levels(const udcm_series *s, udcm_wsi_level *out, int max);

/* Instance the overview is read from: the smallest THUMBNAIL with both
 * sides >= min_side, else the smallest VOLUME level with both sides >=
 * min_side, else the largest level.  -1 when the series has none. */
int udcm_wsi_overview_level(const udcm_series *s, int min_side);

/* Instance tiles are sampled from: the VOLUME level whose spacing is nearest
 * target_spacing_mm (<= 0: the default) in log ratio, ties to the finer;
 * without spacings the largest VOLUME level.  -1 when there is none. */
int udcm_wsi_tile_level(const udcm_series *s, double target_spacing_mm);

/* The overview level (udcm_wsi_overview_level) stitched to one w x h RGB8
 * picture (*rgb malloc'd, free with udcm_free).  When that level's shorter
 * side is at least 8 x min_side (no usable pyramid), it is read with
 * nearest-neighbour decimation by k = floor(shorter / (4 min_side)).
 * lim may be NULL (defaults; max_frame_pixels bounds the picture).
 * Returns 0 or -1. */
int udcm_wsi_overview_rgb8(const udcm_series *s, const udcm_limits *lim, int min_side,
                           uint8_t **rgb, int *w, int *h, char *err, size_t errlen);

/* The overview as model input, like udcm_frame_tensor: shorter side to
 * size (Pillow bicubic), centre crop, normalise; out: 3 x size x size
 * float32; rgb_out (may be NULL): the size x size x 3 crop. */
int udcm_wsi_overview_tensor(const udcm_series *s, const udcm_limits *lim, int size,
                             const float mean[3], const float std[3], float *out,
                             uint8_t *rgb_out, char *err, size_t errlen);

typedef struct udcm_wsi_tile {
    int instance;                   /* level the tile was read from */
    int x, y;                       /* top-left, 0-based, in its Total Pixel Matrix */
    float tissue;                   /* tissue fraction of the window on the mask */
} udcm_wsi_tile;

/* Tissue tiles for pathology.  Level: udcm_wsi_tile_level.  Tissue mask:
 * the overview picture (min_side = tile_size); a pixel is tissue when
 * max(R,G,B) >= 16 and (mean < 220 or HSV saturation > 0.07).  Windows:
 * the grid of non-overlapping tile_size x tile_size windows centred in the
 * level; candidates are windows with tissue fraction >= 0.5 (else > 0), in
 * raster order; K = min(n_tiles, candidates) are taken at indices
 * floor((i + 0.5) * n / K).  Each window is read by decoding only the frames
 * it overlaps (a few decoded tiles are cached).  n_tiles, tile_size,
 * target_spacing_mm <= 0: the defaults above.
 * *tiles: malloc'd K x tile_size x tile_size x 3 RGB8 (free with udcm_free),
 * *n_out = K; where (may be NULL, n_tiles entries): each tile's origin.
 * No tissue at all: returns 0 with *n_out = 0 (use the overview).
 * Returns 0 or -1.  A slide embedding is the mean of the tile embeddings. */
int udcm_wsi_sample_tiles(const udcm_series *s, const udcm_limits *lim, int n_tiles,
                          int tile_size, double target_spacing_mm, uint8_t **tiles,
                          int *n_out, udcm_wsi_tile *where, char *err, size_t errlen);

/* Frames decoded by the functions above since the process started (all
 * threads): a diagnostic, used by the tests to bound the work. */
uint64_t udcm_wsi_frames_decoded(void);

/* ==== end of whole-slide images ==== */

#ifdef __cplusplus
}
#endif

#endif /* UNIMED_DICOM_H */
