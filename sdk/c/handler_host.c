/*
 * The C SDK over the generated bindings (`plugin.h`): it owns every ownership rule of the
 * canonical ABI so that a plugin never frees anything.
 *
 * - An export owns its arguments: the envelope is copied into NUL-terminated strings and freed.
 * - What an export returns is freed by the bindings after the call (`cabi_post_*`): replies,
 *   error messages and the plugin info are handed over in fresh malloc'd memory.
 * - What an import returns belongs to the caller: state values are copied and freed.
 * - Everything the SDK hands the plugin comes from a per-call arena freed when the handler
 *   returns.
 */
#include "handler_host.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plugin.h"

/* ---- The per-call arena ---------------------------------------------------------------- */

typedef struct block {
    struct block *next;
    max_align_t data[];
} block;

static block *arena;

void *hh_alloc(size_t size) {
    block *b = malloc(sizeof(block) + (size ? size : 1));
    if (!b) abort();
    b->next = arena;
    arena = b;
    return b->data;
}

static void arena_free(void) {
    while (arena) {
        block *next = arena->next;
        free(arena);
        arena = next;
    }
}

static char *arena_strndup(const void *bytes, size_t len) {
    char *s = hh_alloc(len + 1);
    if (len) memcpy(s, bytes, len);
    s[len] = '\0';
    return s;
}

static char *vformat(const char *format, va_list args) {
    va_list again;
    va_copy(again, args);
    int len = vsnprintf(NULL, 0, format, args);
    char *s = hh_alloc(len > 0 ? (size_t)len + 1 : 1);
    vsnprintf(s, len > 0 ? (size_t)len + 1 : 1, format, again);
    va_end(again);
    return s;
}

char *hh_sprintf(const char *format, ...) {
    va_list args;
    va_start(args, format);
    char *s = vformat(format, args);
    va_end(args);
    return s;
}

/* Memory handed to the bindings, which free it after the call (never the arena's). */
static void give_string(plugin_string_t *out, const char *s, size_t len) {
    out->ptr = malloc(len ? len : 1);
    if (!out->ptr) abort();
    if (len) memcpy(out->ptr, s, len);
    out->len = len;
}

static void give_cstring(plugin_string_t *out, const char *s) {
    give_string(out, s ? s : "", s ? strlen(s) : 0);
}

/* A string the bindings only borrow for an import call. */
static plugin_string_t lend(const char *s) {
    plugin_string_t out = {(uint8_t *)s, s ? strlen(s) : 0};
    return out;
}

/* ---- Reading JSON ---------------------------------------------------------------------- */

struct hh_value {
    hh_type type;
    bool boolean;
    double number;
    const char *string;  /* HH_STRING */
    const char **keys;   /* HH_OBJECT */
    const hh_value **items; /* HH_ARRAY elements, HH_OBJECT member values */
    size_t len;
};

typedef struct parser {
    const char *at, *end;
    int depth;
} parser;

/* Deeper documents are refused rather than risking the guest's stack. */
#define MAX_DEPTH 128

static const hh_value *parse_value(parser *p);

static void skip_space(parser *p) {
    while (p->at < p->end && (*p->at == ' ' || *p->at == '\t' || *p->at == '\n' || *p->at == '\r'))
        p->at++;
}

static bool literal(parser *p, const char *word) {
    size_t n = strlen(word);
    if ((size_t)(p->end - p->at) < n || memcmp(p->at, word, n) != 0) return false;
    p->at += n;
    return true;
}

static int hex_digit(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static bool hex4(parser *p, unsigned *out) {
    if (p->end - p->at < 4) return false;
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        int d = hex_digit(p->at[i]);
        if (d < 0) return false;
        v = v << 4 | (unsigned)d;
    }
    p->at += 4;
    *out = v;
    return true;
}

static size_t put_utf8(char *out, unsigned cp) {
    if (cp < 0x80) { out[0] = (char)cp; return 1; }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | cp >> 6);
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | cp >> 12);
        out[1] = (char)(0x80 | (cp >> 6 & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | cp >> 18);
    out[1] = (char)(0x80 | (cp >> 12 & 0x3F));
    out[2] = (char)(0x80 | (cp >> 6 & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* A string token (the opening quote already consumed); decoded, NUL-terminated. */
static const char *parse_string(parser *p) {
    const char *start = p->at;
    /* The decoded text is never longer than the escaped one. */
    while (p->at < p->end && *p->at != '"') p->at += (*p->at == '\\') ? 2 : 1;
    if (p->at >= p->end) return NULL;
    char *out = hh_alloc((size_t)(p->at - start) + 1);
    size_t n = 0;
    parser q = {start, p->at, 0};
    while (q.at < q.end) {
        char c = *q.at++;
        if ((unsigned char)c < 0x20) return NULL;
        if (c != '\\') { out[n++] = c; continue; }
        c = *q.at++;
        switch (c) {
        case '"': out[n++] = '"'; break;
        case '\\': out[n++] = '\\'; break;
        case '/': out[n++] = '/'; break;
        case 'b': out[n++] = '\b'; break;
        case 'f': out[n++] = '\f'; break;
        case 'n': out[n++] = '\n'; break;
        case 'r': out[n++] = '\r'; break;
        case 't': out[n++] = '\t'; break;
        case 'u': {
            unsigned cp, low;
            if (!hex4(&q, &cp)) return NULL;
            if (cp >= 0xD800 && cp < 0xDC00) {
                if (!literal(&q, "\\u") || !hex4(&q, &low) || low < 0xDC00 || low > 0xDFFF)
                    return NULL;
                cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
            } else if (cp >= 0xDC00 && cp < 0xE000) {
                return NULL;
            }
            n += put_utf8(out + n, cp);
            break;
        }
        default: return NULL;
        }
    }
    out[n] = '\0';
    p->at++; /* the closing quote */
    return out;
}

static bool parse_number(parser *p, double *out) {
    const char *start = p->at;
    if (p->at < p->end && *p->at == '-') p->at++;
    if (p->at >= p->end || *p->at < '0' || *p->at > '9') return false;
    if (*p->at == '0') p->at++;
    else while (p->at < p->end && *p->at >= '0' && *p->at <= '9') p->at++;
    if (p->at < p->end && *p->at == '.') {
        p->at++;
        if (p->at >= p->end || *p->at < '0' || *p->at > '9') return false;
        while (p->at < p->end && *p->at >= '0' && *p->at <= '9') p->at++;
    }
    if (p->at < p->end && (*p->at == 'e' || *p->at == 'E')) {
        p->at++;
        if (p->at < p->end && (*p->at == '+' || *p->at == '-')) p->at++;
        if (p->at >= p->end || *p->at < '0' || *p->at > '9') return false;
        while (p->at < p->end && *p->at >= '0' && *p->at <= '9') p->at++;
    }
    char *text = arena_strndup(start, (size_t)(p->at - start));
    *out = strtod(text, NULL);
    return true;
}

/* Elements of an array or object, collected in a growing list before being fixed in size. */
typedef struct collected {
    const char **keys;
    const hh_value **items;
    size_t len, cap;
} collected;

static void collect(collected *c, const char *key, const hh_value *item) {
    if (c->len == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 8;
        const char **keys = hh_alloc(cap * sizeof *keys);
        const hh_value **items = hh_alloc(cap * sizeof *items);
        if (c->len) {
            memcpy(keys, c->keys, c->len * sizeof *keys);
            memcpy(items, c->items, c->len * sizeof *items);
        }
        c->keys = keys;
        c->items = items;
        c->cap = cap;
    }
    c->keys[c->len] = key;
    c->items[c->len++] = item;
}

static const hh_value *parse_container(parser *p, bool object) {
    hh_value *v = hh_alloc(sizeof *v);
    memset(v, 0, sizeof *v);
    v->type = object ? HH_OBJECT : HH_ARRAY;
    collected c = {0};
    char close = object ? '}' : ']';
    if (++p->depth > MAX_DEPTH) return NULL;
    skip_space(p);
    if (p->at < p->end && *p->at == close) {
        p->at++;
        p->depth--;
        return v;
    }
    for (;;) {
        const char *key = NULL;
        skip_space(p);
        if (object) {
            if (p->at >= p->end || *p->at != '"') return NULL;
            p->at++;
            if (!(key = parse_string(p))) return NULL;
            skip_space(p);
            if (p->at >= p->end || *p->at++ != ':') return NULL;
        }
        const hh_value *item = parse_value(p);
        if (!item) return NULL;
        collect(&c, key, item);
        skip_space(p);
        if (p->at >= p->end) return NULL;
        char c2 = *p->at++;
        if (c2 == close) break;
        if (c2 != ',') return NULL;
    }
    p->depth--;
    v->keys = object ? c.keys : NULL;
    v->items = c.items;
    v->len = c.len;
    return v;
}

static const hh_value *parse_value(parser *p) {
    skip_space(p);
    if (p->at >= p->end) return NULL;
    hh_value *v;
    switch (*p->at) {
    case '{': p->at++; return parse_container(p, true);
    case '[': p->at++; return parse_container(p, false);
    case '"': {
        p->at++;
        const char *s = parse_string(p);
        if (!s) return NULL;
        v = hh_alloc(sizeof *v);
        memset(v, 0, sizeof *v);
        v->type = HH_STRING;
        v->string = s;
        v->len = strlen(s);
        return v;
    }
    default:
        v = hh_alloc(sizeof *v);
        memset(v, 0, sizeof *v);
        if (literal(p, "null")) v->type = HH_NULL;
        else if (literal(p, "true")) { v->type = HH_BOOL; v->boolean = true; }
        else if (literal(p, "false")) v->type = HH_BOOL;
        else if (parse_number(p, &v->number)) v->type = HH_NUMBER;
        else return NULL;
        return v;
    }
}

const hh_value *hh_json_parse(const char *text, size_t len) {
    if (!text) return NULL;
    parser p = {text, text + len, 0};
    const hh_value *v = parse_value(&p);
    skip_space(&p);
    return v && p.at == p.end ? v : NULL;
}

hh_type hh_type_of(const hh_value *value) { return value ? value->type : HH_NULL; }

const hh_value *hh_get(const hh_value *object, const char *key) {
    if (!object || object->type != HH_OBJECT || !key) return NULL;
    /* The last duplicate wins, as in most JSON readers. */
    for (size_t i = object->len; i-- > 0;)
        if (strcmp(object->keys[i], key) == 0) return object->items[i];
    return NULL;
}

const hh_value *hh_at(const hh_value *container, size_t index) {
    if (!container || (container->type != HH_ARRAY && container->type != HH_OBJECT) ||
        index >= container->len)
        return NULL;
    return container->items[index];
}

size_t hh_len(const hh_value *value) {
    return value && (value->type == HH_ARRAY || value->type == HH_OBJECT) ? value->len : 0;
}

const char *hh_key_at(const hh_value *object, size_t index) {
    if (!object || object->type != HH_OBJECT || index >= object->len) return NULL;
    return object->keys[index];
}

const char *hh_string(const hh_value *value) {
    return value && value->type == HH_STRING ? value->string : NULL;
}

double hh_number(const hh_value *value, double fallback) {
    return value && value->type == HH_NUMBER ? value->number : fallback;
}

bool hh_int(const hh_value *value, int64_t *out) {
    if (!value || value->type != HH_NUMBER) return false;
    double n = value->number;
    /* 2^63: the first double outside int64_t. */
    if (n != floor(n) || n < -9223372036854775808.0 || n >= 9223372036854775808.0) return false;
    *out = (int64_t)n;
    return true;
}

bool hh_bool(const hh_value *value, bool fallback) {
    return value && value->type == HH_BOOL ? value->boolean : fallback;
}

/* ---- Writing JSON ---------------------------------------------------------------------- */

void hh_json_init(hh_json *w) { memset(w, 0, sizeof *w); }

static void reserve(hh_json *w, size_t more) {
    if (w->len + more + 1 <= w->cap) return;
    size_t cap = w->cap ? w->cap : 64;
    while (cap < w->len + more + 1) cap *= 2;
    char *data = hh_alloc(cap);
    if (w->len) memcpy(data, w->data, w->len);
    w->data = data;
    w->cap = cap;
}

static void append(hh_json *w, const char *s, size_t n) {
    reserve(w, n);
    memcpy(w->data + w->len, s, n);
    w->len += n;
    w->data[w->len] = '\0';
}

/* Before a value: the comma between siblings (not after a key). */
static void separate(hh_json *w) {
    if (w->after_key) {
        w->after_key = false;
        return;
    }
    if (w->depth > 0) {
        uint64_t bit = 1ull << (w->depth % 64);
        if (w->first & bit) w->first &= ~bit;
        else append(w, ",", 1);
    }
}

static void open_container(hh_json *w, char c) {
    separate(w);
    append(w, &c, 1);
    w->depth++;
    uint64_t bit = 1ull << (w->depth % 64);
    w->first |= bit;
    if (c == '{') w->objects |= bit;
    else w->objects &= ~bit;
}

void hh_json_object(hh_json *w) { open_container(w, '{'); }
void hh_json_array(hh_json *w) { open_container(w, '['); }

void hh_json_end(hh_json *w) {
    if (w->depth == 0) return;
    uint64_t bit = 1ull << (w->depth % 64);
    append(w, (w->objects & bit) ? "}" : "]", 1);
    w->depth--;
}

static void write_string(hh_json *w, const char *s, size_t n) {
    static const char hex[] = "0123456789abcdef";
    reserve(w, n + 2);
    append(w, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        switch (c) {
        case '"': append(w, "\\\"", 2); break;
        case '\\': append(w, "\\\\", 2); break;
        case '\n': append(w, "\\n", 2); break;
        case '\r': append(w, "\\r", 2); break;
        case '\t': append(w, "\\t", 2); break;
        default:
            if (c < 0x20) {
                char esc[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
                append(w, esc, 6);
            } else {
                append(w, (const char *)&s[i], 1);
            }
        }
    }
    append(w, "\"", 1);
}

void hh_json_key(hh_json *w, const char *key) {
    separate(w);
    write_string(w, key, strlen(key));
    append(w, ":", 1);
    w->after_key = true;
}

void hh_json_string_n(hh_json *w, const char *text, size_t len) {
    separate(w);
    write_string(w, text, len);
}

void hh_json_string(hh_json *w, const char *text) {
    if (!text) { hh_json_null(w); return; }
    hh_json_string_n(w, text, strlen(text));
}

void hh_json_int(hh_json *w, int64_t n) {
    char text[24];
    separate(w);
    append(w, text, (size_t)snprintf(text, sizeof text, "%lld", (long long)n));
}

void hh_json_number(hh_json *w, double n) {
    if (isnan(n) || isinf(n)) { hh_json_null(w); return; }
    char text[32];
    separate(w);
    append(w, text, (size_t)snprintf(text, sizeof text, "%.17g", n));
}

void hh_json_bool(hh_json *w, bool b) {
    separate(w);
    append(w, b ? "true" : "false", b ? 4 : 5);
}

void hh_json_null(hh_json *w) {
    separate(w);
    append(w, "null", 4);
}

void hh_json_value(hh_json *w, const hh_value *v) {
    switch (hh_type_of(v)) {
    case HH_NULL: hh_json_null(w); break;
    case HH_BOOL: hh_json_bool(w, v->boolean); break;
    case HH_NUMBER: hh_json_number(w, v->number); break;
    case HH_STRING: hh_json_string_n(w, v->string, v->len); break;
    case HH_ARRAY:
        hh_json_array(w);
        for (size_t i = 0; i < v->len; i++) hh_json_value(w, v->items[i]);
        hh_json_end(w);
        break;
    case HH_OBJECT:
        hh_json_object(w);
        for (size_t i = 0; i < v->len; i++) {
            hh_json_key(w, v->keys[i]);
            hh_json_value(w, v->items[i]);
        }
        hh_json_end(w);
        break;
    }
}

const char *hh_json_text(const hh_json *w) { return w->len ? w->data : ""; }

/* ---- The message ----------------------------------------------------------------------- */

static const char *optional(const plugin_option_string_t *s) {
    return s->is_some ? arena_strndup(s->val.ptr, s->val.len) : NULL;
}

/* The envelope as the plugin sees it; the envelope itself is freed by the caller. */
static hh_message message_of(const plugin_envelope_t *e) {
    hh_message m;
    memset(&m, 0, sizeof m);
    m.id = arena_strndup(e->id.ptr, e->id.len);
    m.kind = arena_strndup(e->kind.ptr, e->kind.len);
    m.partition_key = optional(&e->partition_key);
    m.tenant_id = optional(&e->tenant_id);
    m.correlation_id = arena_strndup(e->correlation_id.ptr, e->correlation_id.len);
    m.causation_id = optional(&e->causation_id);
    m.actor = optional(&e->actor);
    m.schema_version = e->schema_version;
    m.occurred_at_ms = e->occurred_at_ms;
    m.attempt = e->attempt;
    hh_header *headers = hh_alloc(e->headers.len * sizeof *headers);
    for (size_t i = 0; i < e->headers.len; i++) {
        headers[i].name = arena_strndup(e->headers.ptr[i].f0.ptr, e->headers.ptr[i].f0.len);
        headers[i].value = arena_strndup(e->headers.ptr[i].f1.ptr, e->headers.ptr[i].f1.len);
    }
    m.headers = headers;
    m.header_count = e->headers.len;
    m.payload = arena_strndup(e->payload.ptr, e->payload.len);
    m.payload_len = e->payload.len;
    return m;
}

static bool same_ascii_name(const char *a, const char *b) {
    for (; *a && *b; a++, b++) {
        char x = (*a >= 'A' && *a <= 'Z') ? (char)(*a + 32) : *a;
        char y = (*b >= 'A' && *b <= 'Z') ? (char)(*b + 32) : *b;
        if (x != y) return false;
    }
    return *a == *b;
}

const char *hh_header_value(const hh_message *msg, const char *name) {
    for (size_t i = 0; i < msg->header_count; i++)
        if (same_ascii_name(msg->headers[i].name, name)) return msg->headers[i].value;
    return NULL;
}

const hh_value *hh_payload(const hh_message *msg) {
    return hh_json_parse(msg->payload, msg->payload_len);
}

/* ---- Handler results ------------------------------------------------------------------- */

/* The message of the failure the handler is returning. */
static const char *failure;

static hh_status fail(hh_status status, const char *format, va_list args) {
    failure = vformat(format, args);
    return status;
}

/* hh_rejected, hh_retryable, hh_permanent: record the message, return the status. */
#define FAILURE(name, status)                             \
    hh_status name(const char *format, ...) {             \
        va_list args;                                     \
        va_start(args, format);                           \
        hh_status recorded = fail(status, format, args);  \
        va_end(args);                                     \
        return recorded;                                  \
    }
FAILURE(hh_rejected, HH_REJECTED)
FAILURE(hh_retryable, HH_RETRYABLE)
FAILURE(hh_permanent, HH_PERMANENT)

__attribute__((weak)) hh_status hh_handle_command(const hh_message *msg, hh_json *reply) {
    return hh_permanent("plugin `%s` handles no commands (got `%s`)", HH_PLUGIN.name, msg->kind);
}

__attribute__((weak)) hh_status hh_handle_event(const hh_message *msg) {
    return hh_permanent("plugin `%s` handles no events (got `%s`)", HH_PLUGIN.name, msg->kind);
}

__attribute__((weak)) hh_status hh_handle_query(const hh_message *msg, hh_json *reply) {
    return hh_permanent("plugin `%s` handles no queries (got `%s`)", HH_PLUGIN.name, msg->kind);
}

/* Runs one handler on an envelope the export owns, and fills the export's results. */
static bool run(plugin_envelope_t *envelope, plugin_list_u8_t *reply_out,
                plugin_handler_error_t *error_out,
                hh_status (*handler)(const hh_message *, hh_json *)) {
    hh_message msg = message_of(envelope);
    plugin_envelope_free(envelope);
    hh_json reply;
    hh_json_init(&reply);
    failure = NULL;
    hh_status status = handler(&msg, &reply);
    bool ok = status == HH_OK;
    if (ok && reply_out) {
        const char *text = reply.len ? reply.data : "null";
        give_string((plugin_string_t *)reply_out, text, strlen(text));
    } else if (!ok) {
        plugin_string_t text;
        give_cstring(&text, failure ? failure : "the handler failed without a message");
        switch (status) {
        case HH_REJECTED:
            error_out->tag = HANDLER_HOST_PLUGIN_TYPES_HANDLER_ERROR_REJECTED;
            error_out->val.rejected = text;
            break;
        case HH_RETRYABLE:
            error_out->tag = HANDLER_HOST_PLUGIN_TYPES_HANDLER_ERROR_RETRYABLE;
            error_out->val.retryable = text;
            break;
        default:
            error_out->tag = HANDLER_HOST_PLUGIN_TYPES_HANDLER_ERROR_PERMANENT;
            error_out->val.permanent = text;
            break;
        }
    }
    arena_free();
    failure = NULL;
    return ok;
}

static hh_status event_handler(const hh_message *msg, hh_json *reply) {
    (void)reply;
    return hh_handle_event(msg);
}

bool exports_plugin_handle_command(plugin_envelope_t *command, plugin_list_u8_t *ret,
                                   plugin_handler_error_t *err) {
    return run(command, ret, err, hh_handle_command);
}

bool exports_plugin_handle_event(plugin_envelope_t *event, plugin_handler_error_t *err) {
    return run(event, NULL, err, event_handler);
}

bool exports_plugin_handle_query(plugin_envelope_t *query, plugin_list_u8_t *ret,
                                 plugin_handler_error_t *err) {
    return run(query, ret, err, hh_handle_query);
}

/* ---- Describing the plugin ------------------------------------------------------------- */

static void give_list(plugin_list_string_t *out, const char *const *names) {
    size_t n = 0;
    while (names && names[n]) n++;
    out->len = n;
    out->ptr = n ? malloc(n * sizeof *out->ptr) : NULL;
    for (size_t i = 0; i < n; i++) give_cstring(&out->ptr[i], names[i]);
}

void exports_plugin_describe(plugin_plugin_info_t *ret) {
    give_cstring(&ret->name, HH_PLUGIN.name);
    give_cstring(&ret->version, HH_PLUGIN.version);
    give_list(&ret->commands, HH_PLUGIN.commands);
    give_list(&ret->events, HH_PLUGIN.events);
    give_list(&ret->queries, HH_PLUGIN.queries);
    size_t n = 0;
    while (HH_PLUGIN.schemas && HH_PLUGIN.schemas[n].kind) n++;
    ret->schemas.len = n;
    ret->schemas.ptr = n ? malloc(n * sizeof *ret->schemas.ptr) : NULL;
    for (size_t i = 0; i < n; i++) {
        give_cstring(&ret->schemas.ptr[i].kind, HH_PLUGIN.schemas[i].kind);
        give_cstring(&ret->schemas.ptr[i].schema, HH_PLUGIN.schemas[i].schema);
    }
}

/* ---- State, events, logging ------------------------------------------------------------ */

const char *hh_state_get(const char *key, size_t *len) {
    plugin_string_t k = lend(key);
    plugin_list_u8_t value;
    if (!handler_host_plugin_unit_of_work_get(&k, &value)) return NULL;
    char *copy = arena_strndup(value.ptr, value.len);
    if (len) *len = value.len;
    plugin_list_u8_free(&value);
    return copy;
}

const hh_value *hh_state_get_json(const char *key) {
    size_t len;
    const char *text = hh_state_get(key, &len);
    return text ? hh_json_parse(text, len) : NULL;
}

void hh_state_put(const char *key, const void *value, size_t len) {
    plugin_string_t k = lend(key);
    plugin_list_u8_t v = {(uint8_t *)value, len};
    handler_host_plugin_unit_of_work_put(&k, &v);
}

void hh_state_put_json(const char *key, const hh_json *value) {
    const char *text = value->len ? value->data : "null";
    hh_state_put(key, text, strlen(text));
}

void hh_state_delete(const char *key) {
    plugin_string_t k = lend(key);
    handler_host_plugin_unit_of_work_delete(&k);
}

void hh_emit_bytes(const char *kind, const void *payload, size_t len,
                   const hh_emit_options *options) {
    static const hh_emit_options none;
    if (!options) options = &none;
    plugin_string_t k = lend(kind);
    plugin_list_u8_t p = {(uint8_t *)payload, len};
    handler_host_plugin_unit_of_work_emit_options_t o;
    memset(&o, 0, sizeof o);
    if (options->partition_key) {
        o.partition_key.is_some = true;
        o.partition_key.val = lend(options->partition_key);
    }
    if (options->at_ms) {
        o.deliver.is_some = true;
        o.deliver.val.tag = HANDLER_HOST_PLUGIN_TYPES_SCHEDULE_AT_MS;
        o.deliver.val.val.at_ms = options->at_ms;
    } else if (options->after_ms) {
        o.deliver.is_some = true;
        o.deliver.val.tag = HANDLER_HOST_PLUGIN_TYPES_SCHEDULE_AFTER_MS;
        o.deliver.val.val.after_ms = options->after_ms;
    }
    plugin_tuple2_string_string_t *headers =
        hh_alloc(options->header_count * sizeof *headers);
    for (size_t i = 0; i < options->header_count; i++) {
        headers[i].f0 = lend(options->headers[i].name);
        headers[i].f1 = lend(options->headers[i].value);
    }
    o.headers.ptr = headers;
    o.headers.len = options->header_count;
    if (options->schema_version) {
        o.schema_version.is_some = true;
        o.schema_version.val = options->schema_version;
    }
    handler_host_plugin_unit_of_work_emit(&k, &p, &o);
}

void hh_emit(const char *kind, const hh_json *payload, const hh_emit_options *options) {
    const char *text = payload->len ? payload->data : "null";
    hh_emit_bytes(kind, text, strlen(text), options);
}

void hh_log(hh_level level, const char *format, ...) {
    va_list args;
    va_start(args, format);
    char *line = vformat(format, args);
    va_end(args);
    plugin_string_t text = lend(line);
    handler_host_plugin_log_log((handler_host_plugin_log_level_t)level, &text);
}
