/*
 * Handler Host plugins in C and C++.
 *
 * A plugin describes itself with one `hh_plugin` value named `HH_PLUGIN` and defines the
 * handlers it needs (a handler it does not define answers `permanent`):
 *
 *     hh_status hh_handle_command(const hh_message *msg, hh_json *reply);
 *     hh_status hh_handle_event(const hh_message *msg);
 *     hh_status hh_handle_query(const hh_message *msg, hh_json *reply);
 *
 * A handler returns HH_OK, or the result of hh_rejected / hh_retryable / hh_permanent. Everything
 * one call does (state writes, emitted events) commits together when it returns HH_OK, or not
 * at all. A trap (abort, __builtin_trap, an out-of-bounds access) discards the call too.
 *
 * Memory: every pointer the SDK hands out (messages, payloads, state values, parsed JSON) lives
 * until the handler returns and is freed by the SDK; never free it, never keep it in a global.
 * Everything the SDK is given (keys, JSON writers) is copied or borrowed for the call only.
 * The host discards the instance after each call, so a global does not survive either.
 */
#ifndef HANDLER_HOST_H
#define HANDLER_HOST_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- Describing the plugin ------------------------------------------------------------- */

/* A JSON Schema the host enforces for one kind: a command or query that does not match is
 * answered 422 before the handler runs; an emitted event that does not match fails the call. */
typedef struct hh_schema {
    const char *kind;
    const char *schema; /* JSON text */
} hh_schema;

/* What the plugin handles. The lists end with NULL (schemas with a NULL kind); a NULL list is
 * empty. Event kinds may be patterns: `order.*` or `*`. */
typedef struct hh_plugin {
    const char *name;
    const char *version;
    const char *const *commands;
    const char *const *events;
    const char *const *queries;
    const hh_schema *schemas;
} hh_plugin;

/* Defined by the plugin. */
extern const hh_plugin HH_PLUGIN;

/* ---- Reading JSON ---------------------------------------------------------------------- */

typedef enum hh_type {
    HH_NULL,
    HH_BOOL,
    HH_NUMBER,
    HH_STRING,
    HH_ARRAY,
    HH_OBJECT,
} hh_type;

/* A parsed JSON value. Every accessor accepts NULL (a missing value) and answers as for a
 * value of the wrong type, so lookups chain without checks: hh_string(hh_get(v, "sku")). */
typedef struct hh_value hh_value;

/* Parses JSON text; NULL when it is not valid JSON. */
const hh_value *hh_json_parse(const char *text, size_t len);
hh_type hh_type_of(const hh_value *value); /* HH_NULL for NULL */
/* The member `key` of an object; NULL when absent or not an object. */
const hh_value *hh_get(const hh_value *object, const char *key);
/* Element `index` of an array, or the value of member `index` of an object (see hh_key_at);
 * NULL when out of range or neither. */
const hh_value *hh_at(const hh_value *container, size_t index);
/* Elements of an array or members of an object; 0 for anything else. */
size_t hh_len(const hh_value *value);
/* The key of member `index` of an object; NULL when out of range. */
const char *hh_key_at(const hh_value *object, size_t index);
/* A string's text (NUL-terminated, UTF-8); NULL when not a string. */
const char *hh_string(const hh_value *value);
/* A number; `fallback` when not a number. Numbers are read as doubles, so integers beyond
 * 2^53 lose precision: send such ids as strings. */
double hh_number(const hh_value *value, double fallback);
/* An integral number; false (and *out untouched) when not a number or not a whole one. */
bool hh_int(const hh_value *value, int64_t *out);
/* A boolean; `fallback` when not a boolean. */
bool hh_bool(const hh_value *value, bool fallback);

/* ---- Writing JSON ---------------------------------------------------------------------- */

/* A JSON writer: commas and escaping are its business. Start a value with hh_json_init (or
 * `hh_json w = {0};`), write one value (usually an object), and hand it to the SDK. */
typedef struct hh_json {
    char *data;
    size_t len, cap;
    int depth;      /* up to 63 nested objects and arrays */
    uint64_t first;   /* bit d: nothing written yet at depth d */
    uint64_t objects; /* bit d: depth d is an object (else an array) */
    bool after_key;
} hh_json;

void hh_json_init(hh_json *w);
void hh_json_object(hh_json *w);
void hh_json_array(hh_json *w);
void hh_json_end(hh_json *w); /* ends the innermost object or array */
void hh_json_key(hh_json *w, const char *key);
void hh_json_string(hh_json *w, const char *text);
void hh_json_string_n(hh_json *w, const char *text, size_t len);
void hh_json_int(hh_json *w, int64_t n);
void hh_json_number(hh_json *w, double n); /* NaN and infinities are written as null */
void hh_json_bool(hh_json *w, bool b);
void hh_json_null(hh_json *w);
/* Writes a parsed value as it is. */
void hh_json_value(hh_json *w, const hh_value *value);
/* The text written so far (NUL-terminated; "" when nothing was). */
const char *hh_json_text(const hh_json *w);

/* ---- The message ----------------------------------------------------------------------- */

typedef struct hh_header {
    const char *name;
    const char *value;
} hh_header;

/* One command, event or query. Optional fields are NULL when not set. */
typedef struct hh_message {
    const char *id;             /* UUIDv7 */
    const char *kind;           /* e.g. `order.place` */
    const char *partition_key;  /* aggregate id; decides the ordering lane of events */
    const char *tenant_id;
    const char *correlation_id; /* shared by every message of one causal tree */
    const char *causation_id;   /* the message whose handler emitted this one */
    const char *actor;
    uint32_t schema_version;    /* 1 when the sender did not set one */
    uint64_t occurred_at_ms;    /* milliseconds since the Unix epoch */
    uint32_t attempt;           /* 1 on first delivery */
    const hh_header *headers;
    size_t header_count;
    const char *payload;        /* the payload bytes, NUL-terminated */
    size_t payload_len;
} hh_message;

/* The value of header `name` (ASCII case-insensitive); NULL when absent. */
const char *hh_header_value(const hh_message *msg, const char *name);
/* The payload parsed as JSON; NULL when it is not JSON. */
const hh_value *hh_payload(const hh_message *msg);

/* ---- Handler results ------------------------------------------------------------------- */

typedef enum hh_status {
    HH_OK = 0,
    HH_REJECTED,  /* bad input: never retried; a command answers 422 */
    HH_RETRYABLE, /* transient: retried with backoff, then dead-lettered */
    HH_PERMANENT, /* will never work: dead-lettered at once */
} hh_status;

/* Record the message (printf-style) and return the status to return from the handler. */
hh_status hh_rejected(const char *format, ...) __attribute__((format(printf, 1, 2)));
hh_status hh_retryable(const char *format, ...) __attribute__((format(printf, 1, 2)));
hh_status hh_permanent(const char *format, ...) __attribute__((format(printf, 1, 2)));

/* The handlers (weak defaults answer `permanent`). `reply` is the answer to the caller: write
 * one JSON value into it; a handler that writes nothing answers `null`. */
hh_status hh_handle_command(const hh_message *msg, hh_json *reply);
hh_status hh_handle_event(const hh_message *msg);
hh_status hh_handle_query(const hh_message *msg, hh_json *reply);

/* ---- State, events, logging: the unit of work ------------------------------------------ */

/* The value of `key` in this plugin's state (NUL-terminated; *len gets its length when `len`
 * is not NULL), this call's own writes included; NULL when there is none. */
const char *hh_state_get(const char *key, size_t *len);
/* The value of `key` parsed as JSON; NULL when there is none or it is not JSON. */
const hh_value *hh_state_get_json(const char *key);
/* Writes `key` (bytes, or the JSON a writer holds). Traps while handling a query. */
void hh_state_put(const char *key, const void *value, size_t len);
void hh_state_put_json(const char *key, const hh_json *value);
/* Deletes `key`. Traps while handling a query. */
void hh_state_delete(const char *key);

/* How to emit an event; `{0}` (or NULL) is: unordered, delivered at commit, no headers. */
typedef struct hh_emit_options {
    const char *partition_key; /* events with one key reach each subscriber in order */
    uint64_t after_ms;         /* deliver this long after the commit (0: at once) */
    uint64_t at_ms;            /* or at this instant, ms since the Unix epoch (0: not set) */
    const hh_header *headers;
    size_t header_count;
    uint32_t schema_version;   /* 0: not set (1) */
} hh_emit_options;

/* Emits an event carrying the JSON a writer holds; it is published only if the unit of work
 * commits. Traps while handling a query. */
void hh_emit(const char *kind, const hh_json *payload, const hh_emit_options *options);
/* The same with a payload of raw bytes. */
void hh_emit_bytes(const char *kind, const void *payload, size_t len,
                   const hh_emit_options *options);

typedef enum hh_level { HH_TRACE, HH_DEBUG, HH_INFO, HH_WARN, HH_ERROR } hh_level;

/* Writes a line (printf-style) into the host's log, tagged with the plugin's name. */
void hh_log(hh_level level, const char *format, ...) __attribute__((format(printf, 2, 3)));
#define hh_debug(...) hh_log(HH_DEBUG, __VA_ARGS__)
#define hh_info(...) hh_log(HH_INFO, __VA_ARGS__)
#define hh_warn(...) hh_log(HH_WARN, __VA_ARGS__)
#define hh_error(...) hh_log(HH_ERROR, __VA_ARGS__)

/* ---- Memory ---------------------------------------------------------------------------- */

/* Memory that lives until the handler returns (freed by the SDK), like everything above.
 * hh_sprintf formats into it. */
void *hh_alloc(size_t size);
char *hh_sprintf(const char *format, ...) __attribute__((format(printf, 1, 2)));

#ifdef __cplusplus
}
#endif

#endif /* HANDLER_HOST_H */
