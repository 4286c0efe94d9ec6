-- title: Events
-- description: Track events per event name per hour, day or week.
-- definition: events of type track, counted per (bucket, event name), with distinct visitors as in queries/README.md.
-- param: from timestamp = -30d : start of the range (inclusive)
-- param: to timestamp = now : end of the range (exclusive)
-- param: source string = * : one source, or * for all
-- param: interval interval = day : bucket size: hour, day or week
-- param: names list = * : comma-separated event names to keep, or * for all
-- param: limit int(1..100000) = 1000 : rows to return
WITH scoped AS (
    SELECT * FROM events
    WHERE timestamp >= $from AND timestamp < $to AND ($source = '*' OR source = $source)
      AND type = 'track'
      AND ($names = '*' OR array_position(string_to_array($names, ','), event) IS NOT NULL)
),
identified AS (
    -- Every event type links ids, whatever names are asked for.
    SELECT anonymous_id, min(user_id) AS known_user FROM events
    WHERE timestamp >= $from AND timestamp < $to AND ($source = '*' OR source = $source)
      AND anonymous_id IS NOT NULL AND user_id IS NOT NULL
    GROUP BY anonymous_id
)
SELECT date_trunc($interval, s.timestamp) AS bucket,
       s.event,
       count(*) AS events,
       count(DISTINCT coalesce(s.user_id, i.known_user, s.anonymous_id)) AS visitors
FROM identified i RIGHT JOIN scoped s ON s.anonymous_id = i.anonymous_id
GROUP BY 1, 2
ORDER BY bucket, events DESC, s.event
LIMIT $limit
