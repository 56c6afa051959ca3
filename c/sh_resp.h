/*
 * sh_resp.h -- the RESP codec: an incremental, zero-copy reader of Redis
 * requests (multibulk and inline) and replies (RESP2 and RESP3), and the
 * encoder for commands.  Shape after hiredis read.c: create / space+commit
 * (or feed) / next / free; errors are sticky.
 */
#ifndef SH_RESP_H
#define SH_RESP_H

#include "sh_buf.h"

enum {
    SH_RESP_REQUEST = 1,     /* client -> server: arrays of bulks, or inline */
    SH_RESP_REPLY = 2        /* server -> client: any RESP2/RESP3 value */
};

typedef struct sh_resp_limits_s {
    uint32_t max_bulk_len;   /* largest bulk string (default 512 MiB) */
    uint32_t max_elements;   /* largest aggregate count (default 1 Mi) */
    uint32_t max_inline_len; /* longest inline command (default 64 KiB) */
    uint32_t max_depth;      /* deepest nesting of replies (default 32;
                                a reply reader made without limits, a
                                backend's: 1 Mi levels) */
} sh_resp_limits_t;

extern const sh_resp_limits_t sh_resp_default_limits;

typedef struct sh_resp_reader_s sh_resp_reader_t;

/* limits may be NULL for the defaults; a reply reader without limits (a
 * backend's replies, which are not attacker-shaped the way requests are)
 * nests as deep as the backend sends */
sh_resp_reader_t *sh_resp_reader_new(int mode, const sh_resp_limits_t *limits);
void sh_resp_reader_free(sh_resp_reader_t *r);

/*
 * sh_resp_reader_space: where the next read may write, and how much.  The
 * reader grows or replaces its buffer so that at least some space is free,
 * and a frame whose size is already known gets room for all of it.
 */
void sh_resp_reader_space(sh_resp_reader_t *r, uint8_t **p, size_t *n);
/* n bytes were written at the pointer sh_resp_reader_space gave */
void sh_resp_reader_commit(sh_resp_reader_t *r, size_t n);
/* copying convenience for tests and fuzzing: space + memcpy + commit */
void sh_resp_reader_feed(sh_resp_reader_t *r, const uint8_t *data, size_t len);

/*
 * sh_resp_reader_next: the next complete frame.
 *   SH_OK with *out set: a frame; the caller owns one reference.
 *   SH_OK with *out NULL: more bytes are needed.
 *   SH_ERROR: the input is malformed or over a limit; sh_resp_reader_error
 *     says why in Redis's words ("Protocol error: invalid bulk length").
 *     The error is sticky: every later call returns SH_ERROR.
 * Inline requests that are empty lines are skipped, as Redis does.
 */
int sh_resp_reader_next(sh_resp_reader_t *r, sh_frame_t **out);
/* every byte received and not yet returned, as one frame (NULL: none);
 * the reader is a plain buffer from then on */
int sh_resp_reader_raw(sh_resp_reader_t *r, sh_frame_t **out);
const char *sh_resp_reader_error(const sh_resp_reader_t *r);
/* bytes received and not yet returned as frames */
size_t sh_resp_reader_pending(const sh_resp_reader_t *r);

/*
 * sh_resp_split_inline: split one inline line (without its "\r\n") into
 * arguments exactly as Redis 7's sdssplitargs does (the rules are at the
 * top of the inline part of sh_resp.c); the line ends at len or at its
 * first NUL.  Unescaped arguments go back to back into out (len bytes are
 * enough), their lengths into lens (len / 2 + 1 entries are enough;
 * maxargs says how many there are).  Returns the argument count, 0 for a
 * blank line, or -1 for unbalanced quotes.
 */
int sh_resp_split_inline(const uint8_t *line, size_t len, uint8_t *out,
    size_t *lens, int maxargs);

/* The id of a Redis command name (sh_frame_t.cmd_id), 0 for none. */
uint32_t sh_resp_command_id(const uint8_t *name, size_t len);

/* Look up SH_CMD_* bits for a command (and subcommand) name. */
uint32_t sh_resp_classify(const uint8_t *name, size_t len,
    const uint8_t *sub, size_t sublen);

/*
 * sh_resp_encode_command: a new frame holding args encoded as a RESP array
 * of bulk strings, with args slices filled.  One reference for the caller.
 */
sh_frame_t *sh_resp_encode_command(const uint8_t *const *args,
    const size_t *lens, int nargs);

/* An error reply: "-msg" when msg starts with an upper-case code and a
 * space, else "-ERR msg" (one reference for the caller). */
sh_frame_t *sh_resp_error_frame(const char *msg);

/*
 * sh_resp_describe: a readable rendering of one RESP value, for logs,
 * debug_printer and codec tests.  Grammar:
 *   +OK            simple string        -ERR msg   error
 *   :42            integer              "a\x00b"   bulk (C escapes, \xNN)
 *   nil            null bulk, null array or RESP3 null
 *   [a, b]         array                {k: v, k2: v2}  map
 *   ~[a, b]        set                  >[a, b]    push
 *   ,3.14          double               #t / #f    boolean
 *   (123           big number           ="txt:..." verbatim (as a bulk)
 *   !"msg"         blob error           |{k: v} x  attributes then value
 * Writes at most cap-1 bytes plus a NUL, truncating with "..."; returns the
 * length it would have needed (like snprintf), or -1 on malformed input.
 */
int sh_resp_describe(const uint8_t *data, size_t len, char *out, size_t cap);

#endif /* SH_RESP_H */
