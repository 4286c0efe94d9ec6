-- title: Active users
-- description: Daily, weekly and monthly active visitors for each day of the range.
-- definition: for day d, DAU = distinct visitors active on d; WAU = in the 7 days ending with d; MAU = in the 30 days ending with d (UTC days; visitors as in queries/README.md, activity = page, screen and track events). Days without activity are absent.
-- param: from timestamp = -30d : first day (its UTC date)
-- param: to timestamp = now : end of the range (exclusive)
-- param: source string = * : one source, or * for all
WITH scoped AS (
    SELECT * FROM events
    WHERE timestamp >= date_trunc('day', $from) - INTERVAL '29 days' AND timestamp < $to
      AND ($source = '*' OR source = $source) AND type IN ('page', 'screen', 'track')
),
identified AS (
    -- Every event type links ids (identify calls above all), not only the activity counted.
    SELECT anonymous_id, min(user_id) AS known_user FROM events
    WHERE timestamp >= date_trunc('day', $from) - INTERVAL '29 days' AND timestamp < $to
      AND ($source = '*' OR source = $source)
      AND anonymous_id IS NOT NULL AND user_id IS NOT NULL
    GROUP BY anonymous_id
),
daily AS (
    SELECT DISTINCT date_trunc('day', s.timestamp) AS day,
           coalesce(s.user_id, i.known_user, s.anonymous_id) AS visitor
    FROM identified i RIGHT JOIN scoped s ON s.anonymous_id = i.anonymous_id
),
days AS (
    SELECT DISTINCT day FROM daily WHERE day >= date_trunc('day', $from)
)
SELECT d.day,
       count(DISTINCT CASE WHEN a.day = d.day THEN a.visitor END) AS dau,
       count(DISTINCT CASE WHEN a.day > d.day - INTERVAL '7 days' THEN a.visitor END) AS wau,
       count(DISTINCT a.visitor) AS mau
FROM days d
JOIN daily a ON a.day <= d.day AND a.day > d.day - INTERVAL '30 days'
GROUP BY d.day
ORDER BY d.day
