/*
 * The `tally` example plugin, in C: how much of each article was ordered.
 *
 * - event `order.placed` `{"order_id","sku","qty"}`: adds the order to its article's tally
 *   (`sku/{sku}`) and to the grand total (`total`).
 * - command `tally.reset` `{"sku"}`: starts the article's tally again (after a stock-take,
 *   say); answers `{"sku","orders":0,"units":0}`. The grand total keeps counting.
 * - query `tally.sku` `{"sku"}`: `{"sku","orders","units","all_orders","all_units"}`
 *   (`all_*`: every order counted so far, whatever was reset).
 *
 * An event without a string `sku` and a whole `qty` of at least 1 cannot ever be counted: it
 * fails `permanent` and goes to the dead letters at once. Everything one call does commits
 * together, or nothing does; the SDK frees everything it hands out when the handler returns.
 */
#include "handler_host.h"

static const char *const COMMANDS[] = {"tally.reset", NULL};
static const char *const EVENTS[] = {"order.placed", NULL};
static const char *const QUERIES[] = {"tally.sku", NULL};
static const hh_schema SCHEMAS[] = {
    {"tally.reset", "{\"type\":\"object\",\"required\":[\"sku\"],"
                    "\"properties\":{\"sku\":{\"type\":\"string\"}}}"},
    {"tally.sku", "{\"type\":\"object\",\"required\":[\"sku\"],"
                  "\"properties\":{\"sku\":{\"type\":\"string\"}}}"},
    {NULL, NULL},
};

const hh_plugin HH_PLUGIN = {
    .name = "tally",
    .version = "0.1.0",
    .commands = COMMANDS,
    .events = EVENTS,
    .queries = QUERIES,
    .schemas = SCHEMAS,
};

/* One tally: `{"orders","units"}`, zero when nothing was stored yet. */
typedef struct tally {
    int64_t orders, units;
} tally;

static tally load(const char *key) {
    const hh_value *stored = hh_state_get_json(key);
    tally t = {0, 0};
    hh_int(hh_get(stored, "orders"), &t.orders);
    hh_int(hh_get(stored, "units"), &t.units);
    return t;
}

static void store(const char *key, tally t) {
    hh_json w;
    hh_json_init(&w);
    hh_json_object(&w);
    hh_json_key(&w, "orders");
    hh_json_int(&w, t.orders);
    hh_json_key(&w, "units");
    hh_json_int(&w, t.units);
    hh_json_end(&w);
    hh_state_put_json(key, &w);
}

hh_status hh_handle_event(const hh_message *msg) {
    const hh_value *order = hh_payload(msg);
    const char *sku = hh_string(hh_get(order, "sku"));
    int64_t qty;
    if (!sku || !hh_int(hh_get(order, "qty"), &qty) || qty < 1)
        return hh_permanent("`%s` %s has no string sku and whole qty >= 1", msg->kind, msg->id);

    const char *key = hh_sprintf("sku/%s", sku);
    tally article = load(key), total = load("total");
    article.orders++, article.units += qty;
    total.orders++, total.units += qty;
    store(key, article);
    store("total", total);
    hh_info("counted %lld x %s (%lld units of it so far)", (long long)qty, sku,
            (long long)article.units);
    return HH_OK;
}

hh_status hh_handle_command(const hh_message *msg, hh_json *reply) {
    const char *sku = hh_string(hh_get(hh_payload(msg), "sku"));
    hh_state_delete(hh_sprintf("sku/%s", sku));
    hh_json_object(reply);
    hh_json_key(reply, "sku");
    hh_json_string(reply, sku);
    hh_json_key(reply, "orders");
    hh_json_int(reply, 0);
    hh_json_key(reply, "units");
    hh_json_int(reply, 0);
    hh_json_end(reply);
    return HH_OK;
}

hh_status hh_handle_query(const hh_message *msg, hh_json *reply) {
    const char *sku = hh_string(hh_get(hh_payload(msg), "sku"));
    tally article = load(hh_sprintf("sku/%s", sku)), total = load("total");
    hh_json_object(reply);
    hh_json_key(reply, "sku");
    hh_json_string(reply, sku);
    hh_json_key(reply, "orders");
    hh_json_int(reply, article.orders);
    hh_json_key(reply, "units");
    hh_json_int(reply, article.units);
    hh_json_key(reply, "all_orders");
    hh_json_int(reply, total.orders);
    hh_json_key(reply, "all_units");
    hh_json_int(reply, total.units);
    hh_json_end(reply);
    return HH_OK;
}
