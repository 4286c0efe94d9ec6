-- title: Overview
-- description: Visitors, page views, sessions, bounce rate and average session duration for the range and for the previous range of equal length.
-- definition: visitor, session and bounce as in queries/README.md. Visitors and page views count the events of each range; a session counts in the range where it starts (events up to a day before the previous range are read to find where sessions began), with all its events. Duration = last activity − first activity of a session, averaged over sessions; bounce rate = bounced sessions / sessions.
-- param: from timestamp = -30d : start of the range (inclusive)
-- param: to timestamp = now : end of the range (exclusive)
-- param: source string = * : one source, or * for all
WITH scoped AS (
    SELECT message_id, anonymous_id, user_id, type, CAST(timestamp AS BIGINT) AS ts,
           CASE WHEN timestamp >= $from THEN 'current'
                WHEN timestamp >= $from - ($to - $from) THEN 'previous'
                ELSE 'before' END AS period
    FROM events
    WHERE timestamp >= $from - ($to - $from) - INTERVAL '1 day' AND timestamp < $to
      AND ($source = '*' OR source = $source)
),
identified AS (
    SELECT anonymous_id, min(user_id) AS known_user FROM scoped
    WHERE anonymous_id IS NOT NULL AND user_id IS NOT NULL GROUP BY anonymous_id
),
activity AS (
    SELECT s.period, s.message_id, s.type, s.ts,
           coalesce(s.user_id, i.known_user, s.anonymous_id) AS visitor
    FROM identified i RIGHT JOIN scoped s ON s.anonymous_id = i.anonymous_id
    WHERE s.type IN ('page', 'screen', 'track')
      AND coalesce(s.user_id, i.known_user, s.anonymous_id) IS NOT NULL
),
marked AS (
    SELECT *, CASE WHEN ts - lag(ts) OVER (PARTITION BY visitor ORDER BY ts, message_id) < 1800000000
                   THEN 0 ELSE 1 END AS starts
    FROM activity
),
numbered AS (
    SELECT *, sum(starts) OVER (PARTITION BY visitor ORDER BY ts, message_id
                                ROWS UNBOUNDED PRECEDING) AS session
    FROM marked
),
per_session AS (
    -- A session's range is the range of its first event: the earliest of its events' ranges,
    -- as ranges follow time. (An aggregate, not a window per session: DataFusion's window
    -- operator slows down badly with millions of partitions.)
    SELECT CASE min(CASE period WHEN 'before' THEN 0 WHEN 'previous' THEN 1 ELSE 2 END)
                WHEN 0 THEN 'before' WHEN 1 THEN 'previous' ELSE 'current' END AS period,
           visitor, session,
           sum(CASE WHEN type = 'page' THEN 1 ELSE 0 END) AS pageviews,
           count(*) AS events,
           (max(ts) - min(ts)) / 1000000.0 AS seconds
    FROM numbered GROUP BY visitor, session
),
session_totals AS (
    SELECT period,
           count(*) AS sessions,
           avg(CASE WHEN pageviews = 1 AND events = 1 THEN 1.0 ELSE 0.0 END) AS bounce_rate,
           avg(seconds) AS avg_session_seconds
    FROM per_session GROUP BY period
),
event_totals AS (
    SELECT period,
           count(DISTINCT visitor) AS visitors,
           sum(CASE WHEN type = 'page' THEN 1 ELSE 0 END) AS pageviews
    FROM activity GROUP BY period
),
cur AS (
    SELECT e.visitors, e.pageviews, s.sessions, s.bounce_rate, s.avg_session_seconds
    FROM (SELECT 1 AS k) one
    LEFT JOIN event_totals e ON e.period = 'current'
    LEFT JOIN session_totals s ON s.period = 'current'
),
prev AS (
    SELECT e.visitors, e.pageviews, s.sessions, s.bounce_rate, s.avg_session_seconds
    FROM (SELECT 1 AS k) one
    LEFT JOIN event_totals e ON e.period = 'previous'
    LEFT JOIN session_totals s ON s.period = 'previous'
)
SELECT coalesce(cur.visitors, 0) AS visitors,
       coalesce(prev.visitors, 0) AS visitors_previous,
       coalesce(cur.pageviews, 0) AS pageviews,
       coalesce(prev.pageviews, 0) AS pageviews_previous,
       coalesce(cur.sessions, 0) AS sessions,
       coalesce(prev.sessions, 0) AS sessions_previous,
       round(coalesce(cur.bounce_rate, 0), 4) AS bounce_rate,
       round(coalesce(prev.bounce_rate, 0), 4) AS bounce_rate_previous,
       round(coalesce(cur.avg_session_seconds, 0), 1) AS avg_session_seconds,
       round(coalesce(prev.avg_session_seconds, 0), 1) AS avg_session_seconds_previous
FROM cur CROSS JOIN prev
