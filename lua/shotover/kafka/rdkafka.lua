-- librdkafka (librdkafka.so.1, Debian's librdkafka1) through the FFI: the
-- few functions the kafka transform's producers use.  No callback is ever
-- given to librdkafka: its events (delivery reports, errors, logs, admin
-- results) wait on the main queue, which writes a byte to a pipe the
-- worker's loop watches (shotover.watch), and are read from there with
-- rd_kafka_queue_poll(q, 0).  Loaded on first use (a config without a
-- kafka transform never needs the library).
local ffi = require "ffi"

ffi.cdef [[
typedef struct rd_kafka_s rd_kafka_t;
typedef struct rd_kafka_conf_s rd_kafka_conf_t;
typedef struct rd_kafka_topic_s rd_kafka_topic_t;
typedef struct rd_kafka_topic_conf_s rd_kafka_topic_conf_t;
typedef struct rd_kafka_queue_s rd_kafka_queue_t;
typedef struct rd_kafka_op_s rd_kafka_event_t;
typedef struct rd_kafka_NewTopic_s rd_kafka_NewTopic_t;
typedef struct rd_kafka_AdminOptions_s rd_kafka_AdminOptions_t;
typedef struct rd_kafka_topic_result_s rd_kafka_topic_result_t;
typedef rd_kafka_event_t rd_kafka_CreateTopics_result_t;

typedef struct rd_kafka_message_s {
    int err;
    rd_kafka_topic_t *rkt;
    int32_t partition;
    void *payload;
    size_t len;
    void *key;
    size_t key_len;
    int64_t offset;
    void *_private;
} rd_kafka_message_t;

rd_kafka_conf_t *rd_kafka_conf_new(void);
void rd_kafka_conf_destroy(rd_kafka_conf_t *conf);
int rd_kafka_conf_set(rd_kafka_conf_t *conf, const char *name,
    const char *value, char *errstr, size_t errstr_size);
void rd_kafka_conf_set_events(rd_kafka_conf_t *conf, int events);
rd_kafka_t *rd_kafka_new(int type, rd_kafka_conf_t *conf, char *errstr,
    size_t errstr_size);
void rd_kafka_destroy(rd_kafka_t *rk);
const char *rd_kafka_err2str(int err);
int rd_kafka_last_error(void);

rd_kafka_topic_t *rd_kafka_topic_new(rd_kafka_t *rk, const char *topic,
    rd_kafka_topic_conf_t *conf);
void rd_kafka_topic_destroy(rd_kafka_topic_t *rkt);
int rd_kafka_produce(rd_kafka_topic_t *rkt, int32_t partition, int msgflags,
    const void *payload, size_t len, const void *key, size_t keylen,
    void *msg_opaque);
int rd_kafka_flush(rd_kafka_t *rk, int timeout_ms);
int rd_kafka_outq_len(rd_kafka_t *rk);

rd_kafka_queue_t *rd_kafka_queue_get_main(rd_kafka_t *rk);
void rd_kafka_queue_destroy(rd_kafka_queue_t *rkqu);
void rd_kafka_queue_io_event_enable(rd_kafka_queue_t *rkqu, int fd,
    const void *payload, size_t size);
rd_kafka_event_t *rd_kafka_queue_poll(rd_kafka_queue_t *rkqu,
    int timeout_ms);
int rd_kafka_event_type(const rd_kafka_event_t *rkev);
const rd_kafka_message_t *rd_kafka_event_message_next(rd_kafka_event_t *rkev);
int rd_kafka_event_error(rd_kafka_event_t *rkev);
const char *rd_kafka_event_error_string(rd_kafka_event_t *rkev);
void rd_kafka_event_destroy(rd_kafka_event_t *rkev);
int rd_kafka_set_log_queue(rd_kafka_t *rk, rd_kafka_queue_t *rkqu);
int rd_kafka_event_log(rd_kafka_event_t *rkev, const char **fac,
    const char **str, int *level);

rd_kafka_NewTopic_t *rd_kafka_NewTopic_new(const char *topic,
    int num_partitions, int replication_factor, char *errstr,
    size_t errstr_size);
void rd_kafka_NewTopic_destroy(rd_kafka_NewTopic_t *new_topic);
rd_kafka_AdminOptions_t *rd_kafka_AdminOptions_new(rd_kafka_t *rk,
    int for_api);
void rd_kafka_AdminOptions_destroy(rd_kafka_AdminOptions_t *options);
int rd_kafka_AdminOptions_set_request_timeout(
    rd_kafka_AdminOptions_t *options, int timeout_ms, char *errstr,
    size_t errstr_size);
void rd_kafka_CreateTopics(rd_kafka_t *rk, rd_kafka_NewTopic_t **new_topics,
    size_t new_topic_cnt, const rd_kafka_AdminOptions_t *options,
    rd_kafka_queue_t *rkqu);
const rd_kafka_CreateTopics_result_t *rd_kafka_event_CreateTopics_result(
    rd_kafka_event_t *rkev);
const rd_kafka_topic_result_t **rd_kafka_CreateTopics_result_topics(
    const rd_kafka_CreateTopics_result_t *result, size_t *cntp);
int rd_kafka_topic_result_error(const rd_kafka_topic_result_t *topicres);
const char *rd_kafka_topic_result_error_string(
    const rd_kafka_topic_result_t *topicres);
const char *rd_kafka_topic_result_name(
    const rd_kafka_topic_result_t *topicres);
]]

-- the soname: Debian's librdkafka1 (the runtime package) has no
-- unversioned librdkafka.so
local SONAME = "librdkafka.so.1"
local lib = ffi.load(SONAME)

-- Never unloaded (glibc's RTLD_NOW | RTLD_NODELETE): LuaJIT closes the
-- library when the worker's Lua state goes, but librdkafka's global state
-- (set up once per process) must outlive any one worker, and memory it
-- holds from globals that vanished reads as leaks to LeakSanitizer.
ffi.cdef "void *dlopen(const char *file, int mode);"
ffi.C.dlopen(SONAME, 0x00002 + 0x01000)

-- (rdkafka.h's macros and enums)
return {
    lib = lib,
    PRODUCER = 0,
    CONF_OK = 0,
    EVENT_DR = 0x1,
    EVENT_LOG = 0x4,
    EVENT_ERROR = 0x8,
    EVENT_CREATETOPICS_RESULT = 100,
    PARTITION_UA = -1,
    MSG_F_COPY = 0x2,
    ERR_TOPIC_ALREADY_EXISTS = 36,
    ADMIN_OP_CREATETOPICS = 1,
}
