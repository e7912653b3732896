-- Delivery bookkeeping for retries by time, redelivery and the duplicate window.
--
-- retry_from: when the current retry budget (alert.backoff.deadline) started. NULL means
--   created_at; `conscope alerts redeliver` sets it to the time of the redelivery, so a
--   delivery put back to pending gets a whole deadline again.
-- maybe_delivered: the last request carrying this row may have reached the notifier although
--   no 2xx was recorded: it is set just before each request and cleared by every answer that
--   proves the message was not taken (429, 4xx, a refused connection). Still set at the next
--   send means that send is a possible repeat (a 5xx, a timeout after sending, or a crash
--   between the answer and its record); the sender counts it in
--   conscope_alert_possible_repeats_total.
ALTER TABLE alert_deliveries
    ADD COLUMN retry_from TIMESTAMPTZ,
    ADD COLUMN maybe_delivered BOOLEAN NOT NULL DEFAULT false;

-- `conscope alerts list --status failed` and `redeliver --since` look rows up by status and age.
CREATE INDEX alert_deliveries_status_created ON alert_deliveries (status, created_at);
