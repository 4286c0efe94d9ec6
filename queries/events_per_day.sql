-- title: Events per day
-- description: Number of events and distinct visitors per UTC day and event type.
-- definition: visitors = distinct coalesce(user_id, anonymous_id)
-- param: from timestamp = -30d : start of the range (inclusive)
-- param: to timestamp = now : end of the range (exclusive)
-- param: source string = * : one source, or * for all
SELECT
    event_date,
    type,
    count(*) AS events,
    count(DISTINCT coalesce(user_id, anonymous_id)) AS visitors
FROM events
WHERE timestamp >= $from AND timestamp < $to AND ($source = '*' OR source = $source)
GROUP BY event_date, type
ORDER BY event_date, type
