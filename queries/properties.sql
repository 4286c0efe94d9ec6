-- title: Event properties
-- description: Breakdown of one property of one event: how often each value occurs.
-- definition: events named `event` in the range, grouped by the text of properties.<property> (via the JSON functions; a missing property is "(none)"), with distinct visitors as coalesce(user_id, anonymous_id).
-- param: from timestamp = -30d : start of the range (inclusive)
-- param: to timestamp = now : end of the range (exclusive)
-- param: source string = * : one source, or * for all
-- param: event string = Purchased : the event name
-- param: property string = plan : the property (top-level key of properties)
-- param: limit int(1..10000) = 10 : rows to return
SELECT coalesce(json_as_text(properties, CAST($property AS VARCHAR)), '(none)') AS value,
       count(*) AS events,
       count(DISTINCT coalesce(user_id, anonymous_id)) AS visitors
FROM events
WHERE timestamp >= $from AND timestamp < $to AND ($source = '*' OR source = $source)
  AND event = $event
GROUP BY 1
ORDER BY events DESC, value
LIMIT $limit
