-- title: Overview
-- description: Visitors, page views, sessions, bounce rate and average session duration for the range and for the previous range of equal length.
-- definition: visitor, session and bounce as in queries/README.md; each range is computed from its own events only (a session is cut at the boundary between the two ranges). Duration = last activity − first activity of a session, averaged over sessions; bounce rate = bounced sessions / sessions.
-- param: from timestamp = -30d : start of the range (inclusive)
-- param: to timestamp = now : end of the range (exclusive)
-- param: source string = * : one source, or * for all
WITH scoped AS (
    SELECT message_id, anonymous_id, user_id, type, CAST(timestamp AS BIGINT) AS ts,
           CASE WHEN timestamp >= $from THEN 'current' ELSE 'previous' END AS period
    FROM events
    WHERE timestamp >= $from - ($to - $from) AND timestamp < $to
      AND ($source = '*' OR source = $source)
),
identified AS (
    SELECT period, anonymous_id, min(user_id) AS known_user FROM scoped
    WHERE anonymous_id IS NOT NULL AND user_id IS NOT NULL GROUP BY period, anonymous_id
),
activity AS (
    SELECT s.period, s.message_id, s.type, s.ts,
           coalesce(s.user_id, i.known_user, s.anonymous_id) AS visitor
    FROM scoped s LEFT JOIN identified i ON s.period = i.period AND s.anonymous_id = i.anonymous_id
    WHERE s.type IN ('page', 'screen', 'track')
),
marked AS (
    SELECT *, CASE WHEN ts - lag(ts) OVER (PARTITION BY period, visitor ORDER BY ts, message_id) < 1800000000
                   THEN 0 ELSE 1 END AS starts
    FROM activity
),
numbered AS (
    SELECT *, sum(starts) OVER (PARTITION BY period, visitor ORDER BY ts, message_id
                                ROWS UNBOUNDED PRECEDING) AS session
    FROM marked
),
sessions AS (
    SELECT period, visitor, session,
           sum(CASE WHEN type = 'page' THEN 1 ELSE 0 END) AS pageviews,
           count(*) AS events,
           (max(ts) - min(ts)) / 1000000.0 AS seconds
    FROM numbered GROUP BY period, visitor, session
),
totals AS (
    SELECT period,
           count(DISTINCT visitor) AS visitors,
           sum(pageviews) AS pageviews,
           count(*) AS sessions,
           avg(CASE WHEN pageviews = 1 AND events = 1 THEN 1.0 ELSE 0.0 END) AS bounce_rate,
           avg(seconds) AS avg_session_seconds
    FROM sessions GROUP BY period
),
cur AS (SELECT * FROM totals WHERE period = 'current'),
prev AS (SELECT * FROM totals WHERE period = 'previous'),
one AS (SELECT 1 AS k)
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
FROM one LEFT JOIN cur ON true LEFT JOIN prev ON true
