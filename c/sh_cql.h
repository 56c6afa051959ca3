/*
 * sh_cql.h -- the CQL native protocol codec: framing of v3/v4 frames and of
 * v5 segments (with their CRCs and LZ4), zero-copy, resumable, in the same
 * create / space+commit (or feed) / next / free shape as the RESP reader.
 * Bodies are not decoded here: a frame is a slice holding the 9-byte
 * envelope header and the body, and Lua reads bodies on demand.
 */
#ifndef SH_CQL_H
#define SH_CQL_H

#include "sh_buf.h"

enum {
    SH_CQL_REQUEST = 1,      /* client -> server */
    SH_CQL_RESPONSE = 2      /* server -> client */
};

enum {
    SH_CQL_HEADER_LEN = 9,   /* version, flags, stream(2), opcode, length(4) */
    SH_CQL_SEGMENT_MAX = 131071, /* largest v5 segment payload (2^17 - 1) */
    SH_CQL_MIN_VERSION = 3,  /* oldest protocol version we speak */
    SH_CQL_MAX_VERSION = 5   /* newest */
};

/* v4 body compression, as recorded in a CQL frame's cmd */
enum {
    SH_CQL_BODY_LZ4 = 1,
    SH_CQL_BODY_SNAPPY = 2
};

/* v5 segment compression */
enum {
    SH_CQL_SEGMENTS_PLAIN = 1,
    SH_CQL_SEGMENTS_LZ4 = 2
};

typedef struct sh_cql_limits_s {
    uint32_t max_body_len;   /* largest envelope body (default 16 MiB, as
                                Cassandra 5.0's native_transport_max_frame_size) */
} sh_cql_limits_t;

extern const sh_cql_limits_t sh_cql_default_limits;

typedef struct sh_cql_reader_s sh_cql_reader_t;

sh_cql_reader_t *sh_cql_reader_new(int mode, const sh_cql_limits_t *limits);
sh_frame_t *sh_cql_frame_copy(const uint8_t *data, size_t len,
    const char **err);
void sh_cql_reader_free(sh_cql_reader_t *r);
void sh_cql_reader_space(sh_cql_reader_t *r, uint8_t **p, size_t *n);
void sh_cql_reader_commit(sh_cql_reader_t *r, size_t n);
void sh_cql_reader_feed(sh_cql_reader_t *r, const uint8_t *data, size_t len);

/*
 * sh_cql_reader_next: the next complete envelope.
 *   SH_OK with *out set: a frame (data = 9-byte header + body; rtype is the
 *     opcode, argc the stream id); the caller owns one reference.
 *   SH_OK with *out NULL: more bytes are needed.
 *   SH_ERROR: malformed, over a limit, a bad CRC, or an unsupported
 *     version; sh_cql_reader_error says why and sh_cql_reader_error_stream
 *     gives the stream id of the offending frame when its header could be
 *     read (else -1).  Sticky.
 */
int sh_cql_reader_next(sh_cql_reader_t *r, sh_frame_t **out);
const char *sh_cql_reader_error(const sh_cql_reader_t *r);
int sh_cql_reader_error_stream(const sh_cql_reader_t *r);
/* the protocol version of the first frame seen, 0 before it */
int sh_cql_reader_version(const sh_cql_reader_t *r);
/* the version to answer a failed reader's error with: its own, or for an
 * unsupported one what Cassandra does (an old version: that version, so the
 * client can read it; a newer one: our newest) */
int sh_cql_reader_error_version(const sh_cql_reader_t *r);
size_t sh_cql_reader_pending(const sh_cql_reader_t *r);

/*
 * sh_cql_reader_use_segments: the bytes after those already parsed are v5
 * segments (SH_CQL_SEGMENTS_PLAIN or _LZ4), as after a v5 READY or
 * AUTHENTICATE.
 */
void sh_cql_reader_use_segments(sh_cql_reader_t *r, int how);

/*
 * sh_cql_segments_encode: wrap n envelopes in v5 segments: as many whole
 * envelopes per self-contained segment as fit, an envelope too big for one
 * segment split over several.  Returns a buffer (one reference) and its
 * length through *len.
 */
sh_buf_t *sh_cql_segments_encode(sh_frame_t *const *frames, uint32_t n,
    int how, uint32_t *len);

/*
 * sh_cql_body_decompress: the uncompressed body of a frame whose flag 0x01
 * is set, in a new buffer (one reference) with its length.  NULL with *err
 * when it does not decompress.
 */
sh_buf_t *sh_cql_body_decompress(const sh_frame_t *f, uint32_t *len,
    const char **err);

/*
 * sh_cql_body_compress: body compressed as frame f's connection compresses
 * v4 bodies (f->cmd), in a new buffer with its length; NULL with *err.
 */
sh_buf_t *sh_cql_body_compress(const sh_frame_t *f, const uint8_t *body,
    uint32_t len, uint32_t *out_len, const char **err);

/* opcodes, flags and error codes are in sh_ffi.h (Lua reads them too) */

/* An ERROR response envelope: version, stream, code and message. */
sh_frame_t *sh_cql_error_frame(int version, int stream, uint32_t code,
    const char *msg);

/*
 * sh_cql_startup_compression: the COMPRESSION option of a STARTUP frame:
 * "lz4", "snappy" or NULL, copied to out.
 */
const char *sh_cql_startup_compression(const sh_frame_t *f, char *out,
    size_t cap);

/*
 * The handshake state of one side of a CQL connection (a client's, or ours
 * to a node): the STARTUP's compression, and the switch to v5 segments that
 * the answer to STARTUP (READY or AUTHENTICATE) makes in both directions.
 */
typedef struct sh_cql_framing_s {
    int segments;            /* 0, or SH_CQL_SEGMENTS_* once switched */
    int lz4;                 /* the STARTUP asked for lz4 */
    int algo;                /* v4 body compression: 0 or SH_CQL_BODY_* */
    int startup;             /* STARTUP seen, its answer not yet */
} sh_cql_framing_t;

/* A request goes by: a STARTUP records its compression; every other frame
 * gets the connection's body compression in f->cmd. */
void sh_cql_framing_request(sh_cql_framing_t *fr, sh_frame_t *f);
/* A response goes by: 1 when it is the answer to STARTUP that switches a
 * v5 connection to segments (the reader r, reading the other direction of
 * the same connection, now expects segments too), else 0. */
int sh_cql_framing_response(sh_cql_framing_t *fr, const sh_frame_t *f,
    sh_cql_reader_t *r);
/* frames as they go on the wire: a new frame holding them in segments when
 * the connection uses them (one reference), else NULL (write them as
 * they are) */
sh_frame_t *sh_cql_framing_wrap(const sh_cql_framing_t *fr,
    sh_frame_t *const *frames, uint32_t n);

static inline int
sh_cql_frame_version(const sh_frame_t *f)
{
    return f->data[0] & 0x7f;
}

/* Cassandra's CRC24 of up to 8 little-endian header bytes, and its CRC32
 * (zlib's, primed with the bytes FA 2D 55 CA). */
uint32_t sh_cql_crc24(uint64_t bytes, int len);
uint32_t sh_cql_crc32(const uint8_t *p, size_t n);

#endif /* SH_CQL_H */
