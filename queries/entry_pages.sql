-- title: Entry pages
-- description: The first page of each session: sessions and visitors per entry page.
-- definition: session as in queries/README.md; the entry page is the session's first page view (sessions without a page view have none).
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
    SELECT s.message_id, s.type, s.page_path, CAST(s.timestamp AS BIGINT) AS ts,
           coalesce(s.user_id, i.known_user, s.anonymous_id) AS visitor
    FROM scoped s LEFT JOIN identified i ON s.anonymous_id = i.anonymous_id
    WHERE s.type IN ('page', 'screen', 'track')
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
    WHERE visitor IS NOT NULL
),
in_range AS (
    -- Sessions that start within the range; one running at its start belongs to the range
    -- before.
    SELECT visitor, session FROM numbered GROUP BY visitor, session
    HAVING min(ts) >= CAST($from AS BIGINT)
),
firsts AS (
    SELECT n.visitor, n.session, n.page_path,
           row_number() OVER (PARTITION BY n.visitor, n.session ORDER BY n.ts, n.message_id) AS nth
    FROM numbered n
    WHERE type = 'page'
      AND EXISTS (SELECT 1 FROM in_range r WHERE r.visitor = n.visitor AND r.session = n.session)
)
SELECT coalesce(page_path, '(none)') AS entry_page,
       count(*) AS sessions,
       count(DISTINCT visitor) AS visitors
FROM firsts
WHERE nth = 1
GROUP BY 1
ORDER BY sessions DESC, entry_page
LIMIT $limit
