/**
 * The `notifier` example plugin, in JavaScript: tells customers their order was placed.
 *
 * - command `notify.channel` `{"channel"}`: where notifications go (e.g. "email"); answers it.
 * - event `order.placed`: records a notification in `sent/{order_id}` for the channel and
 *   counts it. Until a channel is set, a notification fails `Retryable`: it is retried with
 *   backoff and, if no channel arrives in time, dead-lettered (replay it once one does).
 * - query `notify.sent` `{"order_id"}`: `{"order_id","channel","text","total"}`.
 */

import { exportPlugin, Rejected, Retryable, state, log } from "handler-host";

export const { describe, handleCommand, handleEvent, handleQuery } = exportPlugin({
  name: "notifier",
  version: "0.1.0",
  commands: ["notify.channel"],
  events: ["order.placed"],
  queries: ["notify.sent"],

  handleCommand(msg) {
    const { channel } = msg.payload();
    if (typeof channel !== "string" || channel.trim() === "") {
      throw new Rejected("channel must be a non-empty string");
    }
    state.put("channel", channel);
    return { channel };
  },

  handleEvent(msg) {
    const order = msg.payload();
    const channel = state.get("channel");
    if (channel === undefined) {
      throw new Retryable("no notification channel yet: send `notify.channel` first");
    }
    const total = state.get("total", 0) + 1;
    state.put("total", total);
    state.put(`sent/${order.order_id}`, {
      order_id: order.order_id,
      channel,
      text: `Order ${order.order_id}: ${order.qty} x ${order.sku} placed`,
    });
    log.info(`notified ${order.order_id} by ${channel}`);
  },

  handleQuery(msg) {
    const { order_id } = msg.payload();
    const sent = state.get(`sent/${order_id}`);
    if (sent === undefined) throw new Rejected(`no notification for order \`${order_id}\``);
    return { ...sent, total: state.get("total", 0) };
  },
});
