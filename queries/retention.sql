-- title: Retention
-- description: Weekly cohorts by the week a visitor was first seen, and the share active in each later week.
-- definition: a visitor's cohort is the UTC week (starting Monday) of their first activity within the range; week_number n counts the cohort's visitors active in week cohort + n (activity = page, screen and track events; visitors as in queries/README.md). share = visitors / cohort_size.
-- param: from timestamp = -56d : start of the range (inclusive; rounded down to its Monday)
-- param: to timestamp = now : end of the range (exclusive)
-- param: source string = * : one source, or * for all
WITH scoped AS (
    SELECT * FROM events
    WHERE timestamp >= date_trunc('week', $from) AND timestamp < $to AND ($source = '*' OR source = $source)
      AND type IN ('page', 'screen', 'track')
),
identified AS (
    SELECT anonymous_id, min(user_id) AS known_user FROM events
    WHERE timestamp >= $from AND timestamp < $to AND ($source = '*' OR source = $source)
      AND anonymous_id IS NOT NULL AND user_id IS NOT NULL
    GROUP BY anonymous_id
),
activity AS (
    SELECT DISTINCT coalesce(s.user_id, i.known_user, s.anonymous_id) AS visitor,
           date_trunc('week', s.timestamp) AS week
    FROM identified i RIGHT JOIN scoped s ON s.anonymous_id = i.anonymous_id
    WHERE coalesce(s.user_id, i.known_user, s.anonymous_id) IS NOT NULL
),
cohorts AS (
    SELECT visitor, min(week) AS cohort FROM activity GROUP BY visitor
),
sizes AS (
    SELECT cohort, count(*) AS cohort_size FROM cohorts GROUP BY cohort
)
SELECT c.cohort,
       CAST((CAST(a.week AS BIGINT) - CAST(c.cohort AS BIGINT)) / 604800000000 AS BIGINT) AS week_number,
       count(*) AS visitors,
       s.cohort_size,
       round(count(*) * 1.0 / s.cohort_size, 4) AS share
FROM activity a
JOIN cohorts c ON a.visitor = c.visitor
JOIN sizes s ON s.cohort = c.cohort
GROUP BY c.cohort, week_number, s.cohort_size
ORDER BY c.cohort, week_number
