-- title: Top pages
-- description: Pages by page views, with distinct visitors.
-- definition: page views = events of type page per page_path; visitors as in queries/README.md.
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
visits AS (
    SELECT s.page_path, s.type, coalesce(s.user_id, i.known_user, s.anonymous_id) AS visitor
    FROM identified i RIGHT JOIN scoped s ON s.anonymous_id = i.anonymous_id
)
SELECT coalesce(page_path, '(none)') AS page_path,
       count(*) AS pageviews,
       count(DISTINCT visitor) AS visitors
FROM visits
WHERE type = 'page'
GROUP BY 1
ORDER BY pageviews DESC, page_path
LIMIT $limit
