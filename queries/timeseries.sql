-- title: Visitors and page views over time
-- description: Visitors and page views per hour, day or week.
-- definition: visitors per bucket as in queries/README.md (a visitor counts once per bucket); page views = events of type page. Buckets start at UTC midnight; weeks start on Monday. Buckets without events are absent.
-- param: from timestamp = -30d : start of the range (inclusive)
-- param: to timestamp = now : end of the range (exclusive)
-- param: source string = * : one source, or * for all
-- param: interval interval = day : bucket size: hour, day or week
WITH scoped AS (
    SELECT * FROM events
    WHERE timestamp >= $from AND timestamp < $to AND ($source = '*' OR source = $source)
),
identified AS (
    SELECT anonymous_id, min(user_id) AS known_user FROM scoped
    WHERE anonymous_id IS NOT NULL AND user_id IS NOT NULL GROUP BY anonymous_id
),
visits AS (
    SELECT date_trunc($interval, s.timestamp) AS bucket, s.type,
           coalesce(s.user_id, i.known_user, s.anonymous_id) AS visitor
    FROM identified i RIGHT JOIN scoped s ON s.anonymous_id = i.anonymous_id
    WHERE s.type IN ('page', 'screen', 'track')
)
SELECT bucket,
       count(DISTINCT visitor) AS visitors,
       sum(CASE WHEN type = 'page' THEN 1 ELSE 0 END) AS pageviews
FROM visits
GROUP BY bucket
ORDER BY bucket
