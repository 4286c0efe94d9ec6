-- title: Devices
-- description: Visitors by browser, operating system and device type (one block of rows each).
-- definition: columns from the user-agent enrichment at ingest; visitors as in queries/README.md; bots (is_bot) are left out.
-- param: from timestamp = -30d : start of the range (inclusive)
-- param: to timestamp = now : end of the range (exclusive)
-- param: source string = * : one source, or * for all
-- param: limit int(1..1000) = 10 : rows per dimension
WITH scoped AS (
    SELECT * FROM events
    WHERE timestamp >= $from AND timestamp < $to AND ($source = '*' OR source = $source)
),
identified AS (
    SELECT anonymous_id, min(user_id) AS known_user FROM scoped
    WHERE anonymous_id IS NOT NULL AND user_id IS NOT NULL GROUP BY anonymous_id
),
visits AS (
    SELECT coalesce(s.browser, 'Unknown') AS browser, coalesce(s.os, 'Unknown') AS os,
           coalesce(s.device_type, 'Unknown') AS device_type,
           coalesce(s.user_id, i.known_user, s.anonymous_id) AS visitor
    FROM identified i RIGHT JOIN scoped s ON s.anonymous_id = i.anonymous_id
    WHERE s.type IN ('page', 'screen', 'track') AND coalesce(s.is_bot, false) = false
),
counted AS (
    SELECT 'browser' AS dimension, browser AS value, count(DISTINCT visitor) AS visitors FROM visits GROUP BY browser
    UNION ALL
    SELECT 'os', os, count(DISTINCT visitor) FROM visits GROUP BY os
    UNION ALL
    SELECT 'device_type', device_type, count(DISTINCT visitor) FROM visits GROUP BY device_type
),
ranked AS (
    SELECT *, row_number() OVER (PARTITION BY dimension ORDER BY visitors DESC, value) AS rank
    FROM counted
)
SELECT dimension, value, visitors
FROM ranked
WHERE rank <= $limit
ORDER BY dimension, visitors DESC, value
