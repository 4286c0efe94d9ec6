-- title: Entry pages
-- description: The first page of each session: sessions and visitors per entry page.
-- definition: session as in queries/README.md; the entry page is the session's first page view (sessions without a page view have none).
-- param: from timestamp = -30d : start of the range (inclusive)
-- param: to timestamp = now : end of the range (exclusive)
-- param: source string = * : one source, or * for all
-- param: limit int(1..10000) = 10 : rows to return
WITH scoped AS (
    SELECT * FROM events
    WHERE timestamp >= $from AND timestamp < $to AND ($source = '*' OR source = $source)
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
),
firsts AS (
    SELECT visitor, session, page_path,
           row_number() OVER (PARTITION BY visitor, session ORDER BY ts, message_id) AS nth
    FROM numbered WHERE type = 'page'
)
SELECT coalesce(page_path, '(none)') AS entry_page,
       count(*) AS sessions,
       count(DISTINCT visitor) AS visitors
FROM firsts
WHERE nth = 1
GROUP BY 1
ORDER BY sessions DESC, entry_page
LIMIT $limit
