/*
 * Test-only plugin: the C SDK's whole surface, driven by the end-to-end tests.
 *
 * - event `order.placed`: records `{kind, id, partition_key, tenant_id, actor, correlation_id,
 *   causation_id, headers, schema_version, attempt, payload}` under `seen/order.placed` and
 *   emits `probe.c.saw` `{"order_id"}` (partition key: the order id; header
 *   `emitted-by: probe-c`; schema version 2). While the switch is on it fails `retryable`
 *   instead, after writing `attempted/{id}` (which the failure rolls back).
 * - command `probe.c.set` `{"failing"}`: the switch; answers it.
 * - command `probe.c.fail` `{"class","key"}`: writes `key`, then fails with that class
 *   (`rejected`, `retryable` or `permanent`): nothing it wrote may commit.
 * - command `probe.c.trap` `{"key"}`: writes `key`, then writes outside its linear memory.
 * - command `probe.c.put` `{"key","value"}`: writes `key` (any JSON value) and answers it.
 * - query `probe.c.seen` `{"kind"}`: what was recorded for that kind (schema: a string `kind`).
 * - query `probe.c.get` `{"key"}`: `{"key","value"}`, value null when there is none.
 * - query `probe.c.sorted` `{"words"}`: the strings among the words, sorted by C++
 *   (`words.cc`, linked with libc++).
 */
#include <stdint.h>
#include <string.h>

#include "handler_host.h"

static const char *const COMMANDS[] = {"probe.c.set", "probe.c.fail", "probe.c.trap",
                                       "probe.c.put", NULL};
static const char *const EVENTS[] = {"order.placed", NULL};
static const char *const QUERIES[] = {"probe.c.seen", "probe.c.get", "probe.c.sorted", NULL};
static const hh_schema SCHEMAS[] = {
    {"probe.c.seen", "{\"type\":\"object\",\"required\":[\"kind\"],"
                     "\"properties\":{\"kind\":{\"type\":\"string\"}}}"},
    {NULL, NULL},
};

const hh_plugin HH_PLUGIN = {
    .name = "probe-c",
    .version = "0.1.0",
    .commands = COMMANDS,
    .events = EVENTS,
    .queries = QUERIES,
    .schemas = SCHEMAS,
};

static void key_string(hh_json *w, const char *key, const char *value) {
    hh_json_key(w, key);
    hh_json_string(w, value); /* null when NULL */
}

static bool failing(void) { return hh_bool(hh_state_get_json("failing"), false); }

hh_status hh_handle_event(const hh_message *msg) {
    if (failing()) {
        hh_state_put(hh_sprintf("attempted/%s", msg->id), "true", 4);
        return hh_retryable("probe-c is failing on purpose (attempt %u)", msg->attempt);
    }
    hh_json seen;
    hh_json_init(&seen);
    hh_json_object(&seen);
    key_string(&seen, "kind", msg->kind);
    key_string(&seen, "id", msg->id);
    key_string(&seen, "partition_key", msg->partition_key);
    key_string(&seen, "tenant_id", msg->tenant_id);
    key_string(&seen, "actor", msg->actor);
    key_string(&seen, "correlation_id", msg->correlation_id);
    key_string(&seen, "causation_id", msg->causation_id);
    hh_json_key(&seen, "headers");
    hh_json_array(&seen);
    for (size_t i = 0; i < msg->header_count; i++) {
        hh_json_array(&seen);
        hh_json_string(&seen, msg->headers[i].name);
        hh_json_string(&seen, msg->headers[i].value);
        hh_json_end(&seen);
    }
    hh_json_end(&seen);
    hh_json_key(&seen, "schema_version");
    hh_json_int(&seen, msg->schema_version);
    hh_json_key(&seen, "attempt");
    hh_json_int(&seen, msg->attempt);
    hh_json_key(&seen, "payload");
    hh_json_value(&seen, hh_payload(msg));
    hh_json_end(&seen);
    hh_state_put_json(hh_sprintf("seen/%s", msg->kind), &seen);

    const char *order_id = hh_string(hh_get(hh_payload(msg), "order_id"));
    hh_json saw;
    hh_json_init(&saw);
    hh_json_object(&saw);
    key_string(&saw, "order_id", order_id);
    hh_json_end(&saw);
    hh_header header = {"emitted-by", "probe-c"};
    hh_emit_options options = {
        .partition_key = msg->partition_key,
        .headers = &header,
        .header_count = 1,
        .schema_version = 2,
    };
    hh_emit("probe.c.saw", &saw, &options);
    hh_info("saw %s %s", msg->kind, msg->id);
    return HH_OK;
}

static hh_status put(const hh_value *payload, hh_json *reply) {
    const char *key = hh_string(hh_get(payload, "key"));
    if (!key || !*key) return hh_rejected("`key` must be a non-empty string");
    hh_json value;
    hh_json_init(&value);
    hh_json_value(&value, hh_get(payload, "value"));
    hh_state_put_json(key, &value);
    hh_json_object(reply);
    key_string(reply, "key", key);
    hh_json_key(reply, "value");
    hh_json_value(reply, hh_get(payload, "value"));
    hh_json_end(reply);
    return HH_OK;
}

hh_status hh_handle_command(const hh_message *msg, hh_json *reply) {
    const hh_value *payload = hh_payload(msg);
    if (!payload) return hh_rejected("the payload is not JSON");
    if (strcmp(msg->kind, "probe.c.set") == 0) {
        bool on = hh_bool(hh_get(payload, "failing"), false);
        hh_state_put("failing", on ? "true" : "false", on ? 4 : 5);
        hh_json_object(reply);
        hh_json_key(reply, "failing");
        hh_json_bool(reply, on);
        hh_json_end(reply);
        return HH_OK;
    }
    if (strcmp(msg->kind, "probe.c.put") == 0) return put(payload, reply);

    const char *key = hh_string(hh_get(payload, "key"));
    if (!key) return hh_rejected("`key` must be a string");
    hh_state_put(key, "\"written before failing\"", 24);
    if (strcmp(msg->kind, "probe.c.trap") == 0) {
        /* Far past the end of linear memory: the store traps. */
        *(volatile uint32_t *)(uintptr_t)0xFFFFFFF0u = 1;
        return hh_permanent("unreachable: the store above traps");
    }
    const char *class = hh_string(hh_get(payload, "class"));
    if (class && strcmp(class, "rejected") == 0) return hh_rejected("rejected on purpose");
    if (class && strcmp(class, "retryable") == 0) return hh_retryable("retryable on purpose");
    return hh_permanent("permanent on purpose");
}

/* In words.cc. */
hh_status probe_sorted_words(const hh_value *payload, hh_json *reply);

hh_status hh_handle_query(const hh_message *msg, hh_json *reply) {
    const hh_value *payload = hh_payload(msg);
    if (strcmp(msg->kind, "probe.c.sorted") == 0) return probe_sorted_words(payload, reply);
    if (strcmp(msg->kind, "probe.c.seen") == 0) {
        const char *kind = hh_string(hh_get(payload, "kind"));
        const hh_value *seen = hh_state_get_json(hh_sprintf("seen/%s", kind));
        if (!seen) return hh_rejected("nothing of kind `%s` seen yet", kind);
        hh_json_value(reply, seen);
        return HH_OK;
    }
    const char *key = hh_string(hh_get(payload, "key"));
    if (!key) return hh_rejected("`key` must be a string");
    hh_json_object(reply);
    key_string(reply, "key", key);
    hh_json_key(reply, "value");
    hh_json_value(reply, hh_state_get_json(key)); /* null when absent */
    hh_json_end(reply);
    return HH_OK;
}
