-- title: Referrers
-- description: Where sessions came from: the referrer host of each session's first page view.
-- definition: session as in queries/README.md; a session whose first page view has no referrer, or whose referrer is the page's own host, is "Direct / None".
-- param: from timestamp = -30d : start of the range (inclusive)
-- param: to timestamp = now : end of the range (exclusive)
-- param: source string = * : one source, or * for all
-- param: limit int(1..10000) = 10 : rows to return
WITH scoped AS (
    -- A day before the range too, to find where sessions running at its start began.
    SELECT * FROM events
    WHERE timestamp >= $from - INTERVAL '1 day' AND timestamp < $to
      AND ($source = '*' OR source = $source)
),
identified AS (
    SELECT anonymous_id, min(user_id) AS known_user FROM scoped
    WHERE anonymous_id IS NOT NULL AND user_id IS NOT NULL GROUP BY anonymous_id
),
activity AS (
    SELECT s.message_id, s.type, s.referrer_host, s.page_url, CAST(s.timestamp AS BIGINT) AS ts,
           coalesce(s.user_id, i.known_user, s.anonymous_id) AS visitor
    FROM identified i RIGHT JOIN scoped s ON s.anonymous_id = i.anonymous_id
    WHERE s.type IN ('page', 'screen', 'track')
),
marked AS (
    SELECT *, CASE WHEN ts - lag(ts) OVER (PARTITION BY visitor ORDER BY ts, message_id) < 1800000000
                   THEN 0 ELSE 1 END AS starts
    FROM activity
),
paged AS (
    -- The visitor's page views so far, this event included.
    SELECT *, sum(CASE WHEN type = 'page' THEN 1 ELSE 0 END)
                  OVER (PARTITION BY visitor ORDER BY ts, message_id ROWS UNBOUNDED PRECEDING) AS pages
    FROM marked
    WHERE visitor IS NOT NULL
),
firsts AS (
    -- A page view is its session's entry when no page view of the session came before it:
    -- the visitor's page count at it is one more than at the session's start. The start of the
    -- current session is the latest start so far. (Windows over the visitor only, in the one
    -- order the session marks already need: a window or a GROUP BY per session costs a sort and
    -- millions of groups more.)
    SELECT *, max(CASE WHEN starts = 1 THEN ts END)
                  OVER (PARTITION BY visitor ORDER BY ts, message_id ROWS UNBOUNDED PRECEDING) AS started,
              max(CASE WHEN starts = 1 THEN pages - CASE WHEN type = 'page' THEN 1 ELSE 0 END END)
                  OVER (PARTITION BY visitor ORDER BY ts, message_id ROWS UNBOUNDED PRECEDING) AS pages_before
    FROM paged
),
entries AS (
    -- Sessions that start within the range; one running at its start belongs to the range before.
    -- (The page's own host only here, for the entries. url_host is the two regular expressions
    -- `regexp_replace(regexp_replace(lower(coalesce(u, '')), '^[a-z]+://([^@/]*@)?(www\.)?', ''),
    -- '[/:?#].*$', '')` computed without them: those took a sixth of the report.)
    SELECT visitor, CASE WHEN referrer_host IS NULL OR referrer_host = ''
                           OR lower(referrer_host) = url_host(page_url)
                           THEN 'Direct / None' ELSE referrer_host END AS referrer
    FROM firsts
    WHERE type = 'page' AND pages = pages_before + 1 AND started >= CAST($from AS BIGINT)
),
per_visitor AS (
    SELECT referrer, visitor, count(*) AS sessions
    FROM entries GROUP BY 1, 2
)
SELECT referrer,
       sum(sessions) AS sessions,
       count(*) AS visitors
FROM per_visitor
GROUP BY 1
ORDER BY sessions DESC, referrer
LIMIT $limit
